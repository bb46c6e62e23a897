using System.Runtime.CompilerServices;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Sources;
using Faultline.Paging.Engines.Bitmap;

namespace Faultline.Paging.Engines.Shared;

/// <summary>
/// The one install path every engine shares, and the sink every page source delivers to: a page is claimed in the
/// <see cref="PageTracker"/>, installed with the backing's ioctl (anonymous: UFFDIO_COPY; shmem: a write into the page
/// cache, then UFFDIO_CONTINUE; a lazy page cache: UFFDIO_COPY, or write and CONTINUE for a page already in the cache;
/// a page a userfault mark evicted: UFFDIO_MOVE back), published and its bitmap bit cleared, exactly once, whoever
/// gets there first. A run of pages is installed with one ioctl per contiguous part this
/// call claimed. Never waits; allocation-free.
/// </summary>
internal sealed unsafe class PageInstaller : IPageSink
{
    private const ulong Page = GuestAddress.PageSize;
    private readonly GuestRegion _ram;
    private readonly UffdSet _uffds;
    private readonly bool _shmem;
    private long _installed;

    public PageTracker Tracker { get; }
    /// <summary>Wake threads sleeping in the userfaultfd on install (false for SIGBUS engines: nobody sleeps there).</summary>
    public bool Wake { get; init; } = true;
    /// <summary>The userfault bitmap whose bit an install clears (bitmap engines).</summary>
    public UserfaultBitmap? Bitmap { get; init; }
    /// <summary>Pages taken away by a userfault mark and kept aside (emulated KVM Userfault on anonymous memory).</summary>
    public IEvictionStore? Evicted { get; set; }
    /// <summary>
    /// Shmem registered MISSING and MINOR, its page cache not allocated: a page goes in with UFFDIO_COPY, which
    /// allocates the page cache page, copies the bytes and maps it in one call (atomically: no PTE before the bytes are
    /// there, so no torn page). EEXIST from it means the page cache holds the page already, unmapped (mappings come only
    /// from claimed installs): its bytes are written through the view and UFFDIO_CONTINUE maps it.
    /// </summary>
    public bool LazyShmem { get; init; }
    public long Installed => Interlocked.Read(ref _installed);
    public UffdSet Uffds => _uffds;

    public PageInstaller(GuestRegion ram, PageTracker tracker, UffdSet uffds)
    {
        _ram = ram; Tracker = tracker; _uffds = uffds; _shmem = ram.Backing == Backing.Shmem;
    }

    public bool Install(GuestAddress page, ReadOnlySpan<byte> bytes)
    {
        Span<bool> installed = stackalloc bool[1];
        return InstallRun(page, 1, bytes, installed) == 1;
    }

    public int InstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed) => InstallRun(first, count, bytes, installed, zero: false);

    public int InstallZeroRun(GuestAddress first, int count, ReadOnlySpan<byte> zeros, Span<bool> installed) =>
        InstallRun(first, count, zeros, installed, zero: !_shmem && _uffds.Count > 0 && Evicted is null);

    /// <param name="zero">The pages are zero and go in with UFFDIO_ZEROPAGE (anonymous memory under a userfaultfd).</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside a transfer
    private int InstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed, bool zero)
    {
        var t = Tracker;
        if (count < 0 || installed.Length < count) throw new ArgumentOutOfRangeException(nameof(count));
        if (bytes.Length < count * (int)Page) throw new ArgumentException($"a run of {count} pages is {count * (int)Page} bytes", nameof(bytes));
        if ((first.Value & (Page - 1)) != 0) throw new ArgumentException($"{first} is not page-aligned", nameof(first));
        installed[..count].Clear();
        if (count == 0) return 0;
        if (!t.Contains(first) || !t.Contains(first + ((ulong)(count - 1) << 12)))
            throw new MigrationException($"pages {first}+{count} are outside guest RAM");
        var i0 = t.IndexOf(first);
        var done = 0;
        var i = 0;
        while (i < count)
        {
            // never waits: pages present or owned by another installer are skipped; the pages claimed here form sub-runs
            if (!t.TryClaim(i0 + (ulong)i)) { i++; continue; }
            var j = i + 1;
            if (!IsEvicted(i0 + (ulong)i))
                while (j < count && _uffds.Same(i0 + (ulong)i, i0 + (ulong)j) && !IsEvicted(i0 + (ulong)j) && t.TryClaim(i0 + (ulong)j)) j++;
            var n = j - i;
            // counted before the install: the ioctl wakes the faulting vCPU, which may finish the whole run before this
            // thread gets back, and a snapshot taken then must already see the page
            Interlocked.Add(ref _installed, n);
            try
            {
                if (zero) InstallZeroClaimed(i0 + (ulong)i, n, bytes.Slice(i * (int)Page, n * (int)Page));
                else if (n == 1) InstallClaimed(i0 + (ulong)i, bytes.Slice(i * (int)Page, (int)Page));
                else InstallRunClaimed(i0 + (ulong)i, n, bytes.Slice(i * (int)Page, n * (int)Page));
            }
            catch
            {
                Interlocked.Add(ref _installed, -n);
                for (var k = i; k < j; k++) t.Abandon(i0 + (ulong)k);
                throw;
            }
            if (n == 1) t.Publish(i0 + (ulong)i);
            else t.PublishRun(i0 + (ulong)i, n);
            for (var k = i; k < j; k++)
            {
                Bitmap?.Clear(i0 + (ulong)k);   // release: the page is fixed before KVM can see the bit clear
                installed[k] = true;
            }
            done += n;
            i = j;
        }
        return done;
    }

    /// <summary>
    /// Installs a page whose bytes are in the page cache already (shmem filled up front: UFFDIO_CONTINUE only), or a
    /// page a userfault mark set aside; true if this call installed it.
    /// </summary>
    public bool InstallInPlace(ulong index)
    {
        var t = Tracker;
        if (!t.TryClaim(index)) return false;
        Interlocked.Increment(ref _installed);
        try { InstallClaimed(index, default); }
        catch
        {
            Interlocked.Decrement(ref _installed);
            t.Abandon(index);
            throw;
        }
        t.Publish(index);
        Bitmap?.Clear(index);
        return true;
    }

    public void Fail(Exception error) => Tracker.Fail(error);

    private bool IsEvicted(ulong index) => Evicted is { } e && e.Holds(index);

    /// <summary>One claimed page; <paramref name="bytes"/> empty: its bytes are in place (page cache, eviction area).</summary>
    private void InstallClaimed(ulong index, ReadOnlySpan<byte> bytes)
    {
        var gpa = Tracker.AddressOf(index);
        var host = _ram.HostOf(gpa);
        if (Evicted is { } e && e.Holds(index))
        {
            e.MoveBack(index, host, Wake);   // contents intact: the bytes given (if any) are an older copy
            return;
        }
        if (_shmem)
        {
            if (LazyShmem && !bytes.IsEmpty)
            {
                InstallLazy(index, host, bytes[..(int)Page]);
                return;
            }
            if (!bytes.IsEmpty) _ram.WriteBacking(index << 12, bytes[..(int)Page]);
            if (_uffds.Count == 0) return; // native userfault without uffd: the page cache is the page
            var o = _uffds.Of(index).Continue(host, Page, dontWake: !Wake);
            if (o == ResolveOutcome.AlreadyPresent && Wake) _uffds.Of(index).Wake(host, Page);
            return;
        }
        if (bytes.IsEmpty) throw new InvalidOperationException($"page {index}: anonymous memory has no page cache to install from");
        fixed (byte* p = bytes)
        {
            if (_uffds.Count == 0) { Buffer.MemoryCopy(p, host.Pointer, Page, Page); return; }
            while (true)
            {
                var o = _uffds.Of(index).Copy(host, p, Page, dontWake: !Wake);
                if (o == ResolveOutcome.Retry) continue;
                // EEXIST: present on the host already (native userfault on a page never taken away): keep it, wake waiters
                if (o == ResolveOutcome.AlreadyPresent && Wake) _uffds.Of(index).Wake(host, Page);
                return;
            }
        }
    }

    /// <summary>One claimed page on a lazy page cache: UFFDIO_COPY, or (in the cache already) write and continue.</summary>
    private void InstallLazy(ulong index, HostAddress host, ReadOnlySpan<byte> page)
    {
        var uffd = _uffds.Of(index);
        fixed (byte* p = page)
            while (true)
            {
                var o = uffd.Copy(host, p, Page, dontWake: !Wake);
                if (o == ResolveOutcome.Installed) return;
                if (o == ResolveOutcome.AlreadyPresent) break;
            }
        InstallCached(uffd, index, host, page);
    }

    /// <summary>
    /// A claimed page that is in the page cache but not mapped (MINOR): its bytes written through the view, then
    /// UFFDIO_CONTINUE, which maps it and wakes its waiters. A mapping found there already (EEXIST) is kept, and woken.
    /// </summary>
    private void InstallCached(Userfaultfd uffd, ulong index, HostAddress host, ReadOnlySpan<byte> page)
    {
        _ram.WriteBacking(index << 12, page);
        while (true)
        {
            var o = uffd.Continue(host, Page, dontWake: !Wake);
            if (o == ResolveOutcome.Retry) continue;
            if (o == ResolveOutcome.AlreadyPresent && Wake) uffd.Wake(host, Page);
            return;
        }
    }

    /// <summary>
    /// Claimed, contiguous zero pages with one UFFDIO_ZEROPAGE; if part of the range was mapped meanwhile (EEXIST) or the
    /// layout changed (EAGAIN), page by page as copies of <paramref name="zeros"/>.
    /// </summary>
    private void InstallZeroClaimed(ulong index, int pages, ReadOnlySpan<byte> zeros)
    {
        var host = _ram.HostOf(Tracker.AddressOf(index));
        if (_uffds.Of(index).ZeroPage(host, (ulong)pages * Page, dontWake: !Wake) == ResolveOutcome.Installed) return;
        for (var k = 0; k < pages; k++) InstallClaimed(index + (ulong)k, zeros.Slice(k * (int)Page, (int)Page));
    }

    /// <summary>
    /// Installs <paramref name="pages"/> claimed, contiguous pages with one ioctl (same userfaultfd, none evicted):
    /// anonymous, one UFFDIO_COPY; shmem, one write into the page cache and one UFFDIO_CONTINUE. Waiters are woken.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void InstallRunClaimed(ulong index, int pages, ReadOnlySpan<byte> bytes)
    {
        var host = _ram.HostOf(Tracker.AddressOf(index));
        var len = (ulong)pages * Page;
        if (_shmem && LazyShmem)
        {
            var uffd = _uffds.Of(index);
            fixed (byte* src = bytes)
                for (ulong off = 0; off < len;)
                {
                    var o = uffd.Copy(host.Add(off), src + off, len - off, out var copied);
                    if (o == ResolveOutcome.Installed) off = len;
                    else if (o == ResolveOutcome.Retry) off += copied > 0 ? (ulong)copied & ~(Page - 1) : 0;
                    else
                    {
                        // EEXIST: the first remaining page is in the page cache already (not mapped): write and continue it
                        InstallCached(uffd, index + (off >> 12), host.Add(off), bytes.Slice((int)off, (int)Page));
                        off += Page;
                    }
                }
            return;
        }
        if (_shmem)
        {
            _ram.WriteBacking(index << 12, bytes[..(int)len], nonTemporal: true);   // a run is pushed: no vCPU reads it now
            if (_uffds.Count == 0) return;
            var uffd = _uffds.Of(index);
            for (ulong off = 0; off < len;)
            {
                var o = uffd.Continue(host.Add(off), len - off, out var mapped);
                off += Advance(o, mapped, uffd, host.Add(off));
            }
            return;
        }
        fixed (byte* src = bytes)
        {
            if (_uffds.Count == 0) { Buffer.MemoryCopy(src, host.Pointer, len, len); return; }
            var uffd = _uffds.Of(index);
            for (ulong off = 0; off < len;)
            {
                var o = uffd.Copy(host.Add(off), src + off, len - off, out var copied);
                off += Advance(o, copied, uffd, host.Add(off));
            }
        }
    }

    /// <summary>
    /// Progress of one multi-page COPY/CONTINUE: all of it, the part the kernel did before it stopped (EAGAIN with a
    /// positive count: installed and woken already), or, when the first remaining page exists already (EEXIST), that
    /// page (kept, its waiters woken). EAGAIN with nothing done retries.
    /// </summary>
    private static ulong Advance(ResolveOutcome o, long done, Userfaultfd uffd, HostAddress at)
    {
        switch (o)
        {
            case ResolveOutcome.Installed: return (ulong)done;
            case ResolveOutcome.Retry: return done > 0 ? (ulong)done & ~(Page - 1) : 0;
            default:
                uffd.Wake(at, Page);
                return Page;
        }
    }
}

/// <summary>Pages a userfault mark took away from anonymous guest RAM, kept aside with their contents.</summary>
internal interface IEvictionStore
{
    bool Holds(ulong index);
    /// <summary>Moves the page back to <paramref name="host"/> (UFFDIO_MOVE), contents intact.</summary>
    void MoveBack(ulong index, HostAddress host, bool wake);
}
