using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Memory;

/// <summary>How a guest RAM region is backed on the host.</summary>
public enum Backing
{
    /// <summary>Private anonymous memory (MISSING faults; UFFDIO_COPY installs pages).</summary>
    Anonymous,
    /// <summary>A memfd (shmem) mapped shared; its page cache can be filled apart from the mapping (MINOR faults; UFFDIO_CONTINUE).</summary>
    Shmem,
}

/// <summary>
/// A contiguous piece of guest RAM: one host mapping (4 KiB pages, huge pages off) at a guest physical base.
/// Owns the mapping and, for shmem, the memfd. Disposal unmaps: do it after every vCPU using it has stopped.
/// </summary>
public sealed unsafe class GuestRegion : IDisposable
{
    private readonly MemFd? _memfd;
    private void* _host;
    private void* _view;   // shmem: a second mapping of the page cache (MapBackingView), unregistered

    public GuestAddress Base { get; }
    public ulong Size { get; }
    public Backing Backing { get; }
    public HostAddress Host => new((ulong)_host);
    public ulong PageCount => Size >> GuestAddress.PageShift;
    public GuestAddress End => Base + Size;

    private GuestRegion(GuestAddress @base, ulong size, Backing backing, MemFd? memfd, void* host)
    {
        Base = @base; Size = size; Backing = backing; _memfd = memfd; _host = host;
    }

    /// <summary>
    /// Maps a new region. Size must be a non-zero multiple of 4 KiB. Guest memory is mapped with 4 KiB pages (one
    /// fault per page, as the paging engines expect), unless <paramref name="hugePages"/> (anonymous memory that is
    /// never paged on demand, as a migration source's): then transparent huge pages where the host has them, so the
    /// guest's first touch of it costs one host fault per 2 MiB instead of one per 4 KiB.
    /// </summary>
    public static GuestRegion Create(GuestAddress @base, ulong size, Backing backing, string name = "faultline-ram", bool hugePages = false)
    {
        if (size == 0 || size % GuestAddress.PageSize != 0) throw new UsageException($"guest memory size {size} is not a positive multiple of 4 KiB");
        if (@base.Value % GuestAddress.PageSize != 0) throw new UsageException($"guest memory base {@base} is not page-aligned");
        MemFd? memfd = null;
        void* host;
        if (backing == Backing.Shmem)
        {
            memfd = new MemFd(Libc.MemfdCreate(name, Libc.MFD_CLOEXEC));
            if (memfd.IsInvalid) throw new KvmException("memfd_create", Marshal.GetLastPInvokeError());
            if (Libc.Ftruncate(memfd.Fd, (long)size) != 0)
            {
                var e = Marshal.GetLastPInvokeError(); memfd.Dispose(); throw new KvmException("ftruncate(memfd)", e);
            }
            host = Libc.Mmap(null, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_NORESERVE, memfd.Fd, 0);
        }
        else
        {
            host = Libc.Mmap(null, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        }
        if (host == Libc.MAP_FAILED)
        {
            var e = Marshal.GetLastPInvokeError(); memfd?.Dispose();
            throw e == Errno.ENOMEM
                ? new UsageException($"cannot map {size >> 20} MiB of guest memory on this host (mmap: ENOMEM)")
                : new KvmException("mmap(guest memory)", e);
        }
        Libc.Madvise(host, (nuint)size, hugePages && backing == Backing.Anonymous ? Libc.MADV_HUGEPAGE : Libc.MADV_NOHUGEPAGE);   // advisory both
        if (backing == Backing.Anonymous) Libc.NameAnonymousMapping(host, (nuint)size, name); // "[anon:faultline-ram]" in /proc/self/maps
        return new GuestRegion(@base, size, backing, memfd, host);
    }

    public bool Contains(GuestAddress gpa) => gpa.Value >= Base.Value && gpa.Value < Base.Value + Size;

    /// <summary>Host address of a guest address inside this region.</summary>
    public HostAddress HostOf(GuestAddress gpa) => new((ulong)_host + (gpa.Value - Base.Value));

    /// <summary>A span over guest bytes through the host mapping (touching a missing registered page faults the caller).</summary>
    public Span<byte> Span(GuestAddress gpa, int length)
    {
        if (gpa.Value < Base.Value || gpa.Value + (ulong)length > Base.Value + Size) throw new ArgumentOutOfRangeException(nameof(gpa));
        // SAFETY: bounds checked above; the mapping lives until Dispose.
        return new Span<byte>((byte*)_host + (gpa.Value - Base.Value), length);
    }

    public ref ulong Qword(GuestAddress gpa) => ref MemoryMarshal.Cast<byte, ulong>(Span(gpa, 8))[0];

    /// <summary>
    /// Maps the memfd a second time, apart from the guest mapping (shmem only), and with <paramref name="populate"/>
    /// allocates the whole page cache (zeroed) through it: later <see cref="WriteBacking"/> calls are plain copies into
    /// pages that already exist, with no syscall, page lookup or allocation per page, and the guest mapping's MINOR
    /// faults stay pending. Unpopulated, a write through the view allocates its page there (a lazy page cache).
    /// Idempotent; a populating call after an unpopulated one populates.
    /// </summary>
    public void MapBackingView(bool populate = true)
    {
        if (_memfd is null) throw new InvalidOperationException("a backing view needs a shmem region");
        if (_view == null)
        {
            var v = Libc.Mmap(null, (nuint)Size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_NORESERVE, _memfd.Fd, 0);
            if (v == Libc.MAP_FAILED) throw new KvmException("mmap(backing view)", Marshal.GetLastPInvokeError());
            Libc.Madvise(v, (nuint)Size, Libc.MADV_NOHUGEPAGE);
            _view = v;
        }
        if (!populate || BackingAllocated) return;
        if (Libc.PopulateWrite(_view, Size) != 0)
        {
            var e = Marshal.GetLastPInvokeError();
            throw e == Errno.ENOMEM
                ? new UsageException($"cannot allocate {Size >> 20} MiB of guest memory on this host (populating the page cache: ENOMEM)")
                : new KvmException("madvise(backing view, MADV_POPULATE_WRITE)", e);
        }
        BackingAllocated = true;
    }

    /// <summary>Whether <see cref="MapBackingView"/> allocated the whole page cache in advance.</summary>
    public bool BackingAllocated { get; private set; }

    /// <summary>
    /// Pages of the memfd's page cache that exist now (shmem: mincore(2) over the guest mapping reports the page cache,
    /// mapped here or not); anonymous memory: pages mapped. Costs a walk of the whole range: for tests and reports.
    /// </summary>
    public long ResidentPages()
    {
        long n = 0;
        foreach (var b in Residency()) n += b & 1;
        return n;
    }

    /// <summary>Per page of the region, mincore's answer (bit 0 set: resident, as <see cref="ResidentPages"/> counts it).</summary>
    public byte[] Residency()
    {
        var vec = new byte[PageCount];
        fixed (byte* p = vec)
            if (Libc.Mincore(_host, (nuint)Size, p) != 0) throw new KvmException("mincore(guest memory)", Marshal.GetLastPInvokeError());
        return vec;
    }

    /// <summary>
    /// Writes into the memfd's page cache without touching the guest mapping (shmem only): MINOR faults stay pending.
    /// <paramref name="nonTemporal"/>: through the backing view, with non-temporal stores (<see cref="CacheHints.CopyNonTemporal"/>),
    /// for pages the guest won't read soon (a background push), not for a page a vCPU waits for.
    /// </summary>
    public void WriteBacking(ulong offset, ReadOnlySpan<byte> data, bool nonTemporal = false)
    {
        if (_memfd is null) throw new InvalidOperationException("WriteBacking needs a shmem region");
        if (offset > Size || (ulong)data.Length > Size - offset) throw new ArgumentOutOfRangeException(nameof(offset));
        if (_view != null)
        {
            // SAFETY: bounds checked above; the view lives until Dispose.
            var to = new Span<byte>((byte*)_view + offset, data.Length);
            if (nonTemporal) CacheHints.CopyNonTemporal(data, to);
            else data.CopyTo(to);
            return;
        }
        fixed (byte* p = data)
        {
            long done = 0;
            while (done < data.Length)
            {
                var n = Libc.Pwrite(_memfd.Fd, p + done, (nuint)(data.Length - done), (long)offset + done);
                if (n < 0) throw new KvmException("pwrite(memfd)", Marshal.GetLastPInvokeError());
                done += n;
            }
        }
    }

    /// <summary>Reads the memfd's page cache (shmem) without touching the mapping.</summary>
    public void ReadBacking(ulong offset, Span<byte> data)
    {
        if (_memfd is null) throw new InvalidOperationException("ReadBacking needs a shmem region");
        fixed (byte* p = data)
        {
            var n = Libc.Pread(_memfd.Fd, p, (nuint)data.Length, (long)offset);
            if (n != data.Length) throw new KvmException("pread(memfd)", Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>Drops the host mapping's pages in [gpa, gpa+len): anonymous pages are freed (missing again), shmem keeps its page cache.</summary>
    public void DropMapping(GuestAddress gpa, ulong length)
    {
        if (Libc.Madvise(HostOf(gpa).Pointer, (nuint)length, Libc.MADV_DONTNEED) != 0)
            throw new KvmException("madvise(MADV_DONTNEED)", Marshal.GetLastPInvokeError());
    }

    public void Dispose()
    {
        var h = _host;
        if (h == null) return;
        _host = null;
        Libc.Munmap(h, (nuint)Size);
        if (_view != null) { Libc.Munmap(_view, (nuint)Size); _view = null; }
        _memfd?.Dispose();
    }
}
