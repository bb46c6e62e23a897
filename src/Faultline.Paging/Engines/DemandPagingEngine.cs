using System.Runtime.CompilerServices;
using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Decode;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines;

/// <summary>
/// Every demand-paging mechanism behind one interface. What differs between the modes is a handful of switches:
/// whether guest RAM is populated up front, which userfaultfd mode covers it (MISSING, MINOR), whether faults block
/// for reader threads or make the vCPU exit (UFFD_FEATURE_SIGBUS), how a CPL3 exit without an address is located
/// (instruction decode, or THREAD_ID + kick), and whether a userfault bitmap decides which vCPU faults exit.
/// The install path is shared: a page is claimed in the <see cref="PageTracker"/>, filled, installed with the
/// backing's ioctl and published, exactly once, whoever gets there first.
/// </summary>
public sealed unsafe class DemandPagingEngine : IPagingEngine
{
    private const ulong Page = GuestAddress.PageSize;

    private GuestMachine? _m;
    private IPageSource? _source;
    private GuestRegion? _ram;
    private PageTracker? _tracker;
    private Userfaultfd[] _uffds = [];
    private ulong _bytesPerUffd;
    private readonly List<Thread> _readers = [];
    private StopEvent? _stop;
    private UserfaultBitmap? _bitmap;
    private bool _nativeUserfault;
    private GuestRegion? _scratch;                 // anonymous pages evicted by Mark wait here (UFFDIO_MOVE)
    private byte[]? _inScratch;

    private bool _sigbus;            // vCPU faults exit instead of blocking
    private bool _forwardToVcpu;     // blocking uffd + THREAD_ID: readers hand vCPU faults to the vCPU thread
    private bool _pageCacheReady;    // shmem page cache holds the content: CONTINUE only
    private volatile bool _kickIneffective;
    private int _rescues;
    private long[] _mailbox = [];    // per vCPU: forwarded GPA + 1
    private long[] _mailboxSince = [];
    private FaultAddressDecoder?[] _decoders = [];
    private KvmSregs[] _sregs = [];
    private bool[] _sregsValid = [];
    private bool[] _forwardable = [];
    private Counters[] _vcpuCounters = [];
    private readonly List<Counters> _readerCounters = [];
    private string _mechanism = "";
    private int _disposed;

    public PagingOptions Options { get; }
    public PageTracker Tracker => _tracker ?? throw new InvalidOperationException("engine not started");
    public UserfaultBitmap? Bitmap => _bitmap;
    public bool UsesNativeUserfault => _nativeUserfault;

    public DemandPagingEngine(PagingOptions options) => Options = options;

    private sealed class Counters
    {
        public long Installed, ReaderFaults, ExitFaults, UserfaultExits, AlreadyPresent, Forwarded, Alloc, AllocStart;
    }

    public void Start(GuestMachine machine, IPageSource source)
    {
        if (_m is not null) throw new InvalidOperationException("engine already started");
        var o = Options;
        o.Validate(machine.Config.Vcpus);
        if (machine.Config.Backing != o.Backing)
            throw new UsageException($"engine wants {o.Backing} memory but the machine has {machine.Config.Backing}");
        _m = machine; _source = source; _ram = machine.Ram;
        _tracker = new PageTracker(_ram.Base, _ram.Size);
        var n = machine.Config.Vcpus;
        _mailbox = new long[n]; _mailboxSince = new long[n];
        _decoders = new FaultAddressDecoder?[n];
        _sregs = new KvmSregs[n];
        _sregsValid = new bool[n];
        _forwardable = new bool[n];
        _vcpuCounters = Enumerable.Range(0, n).Select(_ => new Counters()).ToArray();

        var bitmapMode = o.Mode is PagingMode.Bitmap or PagingMode.MissingBitmap or PagingMode.MinorBitmap;
        if (bitmapMode)
        {
            _bitmap = new UserfaultBitmap(_tracker.Pages);
            _nativeUserfault = o.PreferNativeUserfault && Vm.ProbeNativeUserfault(machine.Kvm);
        }
        // shmem modes keep the content in the page cache, filled up front apart from the mapping (seed 002 does the same)
        if (o.Backing == Backing.Shmem)
        {
            if (o.PrefillPageCache) { PopulatePageCache(); _pageCacheReady = true; }
            else ZeroPageCache();
        }

        switch (o.Mode)
        {
            case PagingMode.None:
                if (o.Backing == Backing.Anonymous) PopulateMapping();
                _tracker.MarkAllPresent();
                _mechanism = "memory populated up front";
                return;
            case PagingMode.Missing:
            case PagingMode.Minor:
                OpenUffds(UffdFeatures.None, o.Uffds);
                StartReaders();
                _mechanism = $"userfaultfd {(o.Mode == PagingMode.Missing ? "MISSING + UFFDIO_COPY" : "MINOR + UFFDIO_CONTINUE")} by {o.Readers} reader(s)";
                return;
            case PagingMode.Exits:
                if (o.AddressRecovery == AddressRecovery.UffdThreadId)
                {
                    OpenUffds(UffdFeatures.ThreadId, o.Uffds);
                    _forwardToVcpu = true;
                    StartReaders();
                    _mechanism = "blocking userfaultfd + THREAD_ID: reader kicks the faulting vCPU, which installs the page";
                }
                else
                {
                    OpenUffds(UffdFeatures.Sigbus, o.Uffds);
                    _sigbus = true;
                    _mechanism = "SIGBUS userfaultfd: the vCPU exits KVM_RUN and installs the page (CPL3 address by instruction decode)";
                }
                return;
            case PagingMode.Bitmap:
                _bitmap!.MarkAll();
                if (_nativeUserfault)
                {
                    machine.Vm.SetUserfault(machine.RamSlot, _bitmap.Address);
                    _mechanism = "native KVM_MEM_USERFAULT bitmap";
                }
                else
                {
                    OpenUffds(UffdFeatures.Sigbus, o.Uffds);
                    _sigbus = true;
                    _mechanism = "emulated KVM Userfault: bitmap + SIGBUS userfaultfd exits";
                }
                return;
            case PagingMode.MissingBitmap:
            case PagingMode.MinorBitmap:
                _bitmap!.MarkAll();
                if (_nativeUserfault)
                {
                    OpenUffds(UffdFeatures.None, o.Uffds);
                    machine.Vm.SetUserfault(machine.RamSlot, _bitmap.Address);
                    _mechanism = "native KVM_MEM_USERFAULT bitmap + userfaultfd readers for non-vCPU accesses";
                }
                else
                {
                    OpenUffds(UffdFeatures.ThreadId, o.Uffds);
                    _forwardToVcpu = true;
                    _mechanism = "emulated KVM Userfault: blocking userfaultfd + THREAD_ID; vCPU faults on marked pages kicked out to the vCPU";
                }
                StartReaders();
                return;
        }
    }

    // ---- setup ------------------------------------------------------------------------------------------------

    private void PopulateMapping()
    {
        var buf = PageBuffer.Span;
        for (ulong off = 0; off < _ram!.Size; off += Page)
        {
            _source!.ReadPage(_ram.Base + off, buf);
            buf.CopyTo(_ram.Span(_ram.Base + off, (int)Page));
        }
    }

    private void PopulatePageCache()
    {
        const int Chunk = 256 * 4096;
        var chunk = new byte[Chunk];
        for (ulong off = 0; off < _ram!.Size; off += Chunk)
        {
            var len = (int)Math.Min((ulong)Chunk, _ram.Size - off);
            for (var p = 0; p < len; p += (int)Page) _source!.ReadPage(_ram.Base + off + (ulong)p, chunk.AsSpan(p, (int)Page));
            _ram.WriteBacking(off, chunk.AsSpan(0, len));
        }
    }

    /// <summary>
    /// Post-copy on shmem: a zeroed page cache makes MINOR faults fire before the real bytes are there. It is allocated
    /// now, through a second populated mapping, so that every later install is a copy into an existing page plus a
    /// UFFDIO_CONTINUE (no page allocation, no pwrite per page while pages land).
    /// </summary>
    private void ZeroPageCache() => _ram!.MapBackingView();

    private void OpenUffds(UffdFeatures extra, UffdLayout layout)
    {
        var shmem = Options.Backing == Backing.Shmem;
        var features = extra | (shmem ? UffdFeatures.MinorShmem : UffdFeatures.None);
        var mode = shmem ? UffdRegisterMode.Minor : UffdRegisterMode.Missing;
        var count = layout == UffdLayout.Single ? 1 : _m!.Config.Vcpus;
        _bytesPerUffd = _ram!.Size / (ulong)count;
        _uffds = new Userfaultfd[count];
        for (var i = 0; i < count; i++)
        {
            _uffds[i] = Userfaultfd.Open(features);
            var ioctls = _uffds[i].Register(_ram.Host.Add((ulong)i * _bytesPerUffd), _bytesPerUffd, mode);
            var need = shmem ? 7 : 3; // _UFFDIO_CONTINUE / _UFFDIO_COPY
            if ((ioctls & (1UL << need)) == 0)
                throw new HostSupportException($"the userfaultfd range does not support {(shmem ? "UFFDIO_CONTINUE" : "UFFDIO_COPY")}");
        }
    }

    private void StartReaders()
    {
        _stop = new StopEvent();
        var perUffd = _uffds.Length == 1 ? Options.Readers : Math.Max(1, Options.Readers / _uffds.Length);
        for (var u = 0; u < _uffds.Length; u++)
            for (var r = 0; r < perUffd; r++)
            {
                var c = new Counters();
                _readerCounters.Add(c);
                var uffd = _uffds[u];
                var t = new Thread(() => ReaderLoop(uffd, c)) { Name = $"fl-uffd{_readers.Count}", IsBackground = true };
                _readers.Add(t);
                t.Start();
            }
    }

    // ---- install path (shared) --------------------------------------------------------------------------------

    private Userfaultfd UffdOf(ulong index) => _uffds.Length == 1 ? _uffds[0] : _uffds[(index << 12) / _bytesPerUffd];

    /// <summary>Installs page <paramref name="index"/> if missing; returns true if this call installed it.</summary>
    private bool Resolve(ulong index, bool wake, Counters c, ReadOnlySpan<byte> bytes = default)
    {
        var t = _tracker!;
        if (!t.TryClaim(index))
        {
            t.WaitPresent(index);
            c.AlreadyPresent++;
            return false;
        }
        // counted before the install: the ioctl wakes the faulting vCPU, which may finish the whole run before this
        // thread gets back, and a Snapshot taken then must already see the page
        c.Installed++;
        try
        {
            InstallClaimed(index, wake, bytes);
        }
        catch
        {
            c.Installed--;
            t.Abandon(index);
            throw;
        }
        t.Publish(index);
        return true;
    }

    private void InstallClaimed(ulong index, bool wake, ReadOnlySpan<byte> bytes)
    {
        var gpa = _tracker!.AddressOf(index);
        var host = _ram!.HostOf(gpa);
        if (_inScratch is not null && _inScratch[index] != 0)
        {
            // an anonymous page that Mark moved out: move it back, contents intact
            var r = UffdOf(index).Move(host, _scratch!.HostOf(_scratch.Base + (index << 12)), Page, dontWake: !wake);
            if (r != ResolveOutcome.Installed) throw new KvmException("UFFDIO_MOVE(back)", Errno.EEXIST);
            _inScratch[index] = 0;
            return;
        }
        if (Options.Backing == Backing.Shmem)
        {
            if (!bytes.IsEmpty) _ram.WriteBacking(index << 12, bytes[..(int)Page]);
            else if (!_pageCacheReady) { var b = PageBuffer.Span; _source!.ReadPage(gpa, b); _ram.WriteBacking(index << 12, b); }
            if (_uffds.Length == 0) return; // native userfault without uffd: the page cache is the page
            var o = UffdOf(index).Continue(host, Page, dontWake: !wake);
            if (o == ResolveOutcome.AlreadyPresent && wake) UffdOf(index).Wake(host, Page);
            return;
        }
        byte* src;
        if (!bytes.IsEmpty)
        {
            fixed (byte* p = bytes) { InstallAnon(index, host, p, wake); return; }
        }
        src = PageBuffer.Current;
        _source!.ReadPage(gpa, new Span<byte>(src, (int)Page));
        InstallAnon(index, host, src, wake);
    }

    private void InstallAnon(ulong index, HostAddress host, byte* src, bool wake)
    {
        if (_uffds.Length == 0) { Buffer.MemoryCopy(src, host.Pointer, Page, Page); return; }
        while (true)
        {
            var o = UffdOf(index).Copy(host, src, Page, dontWake: !wake);
            if (o == ResolveOutcome.Retry) continue;
            if (o == ResolveOutcome.AlreadyPresent)
            {
                // present on the host already (native userfault on a page never taken away): keep it, wake waiters
                if (wake) UffdOf(index).Wake(host, Page);
            }
            return;
        }
    }

    /// <summary>A run of one page: the same claim, install, publish and bit-clear as <see cref="TryInstallRun"/>.</summary>
    public bool TryInstall(GuestAddress page, ReadOnlySpan<byte> bytes)
    {
        Span<bool> installed = stackalloc bool[1];
        return TryInstallRun(page, 1, bytes, installed) == 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside a transfer
    public int TryInstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed)
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
            // never waits: pages present or owned by a fault path are skipped; the pages claimed here form sub-runs
            if (!t.TryClaim(i0 + (ulong)i)) { i++; continue; }
            var j = i + 1;
            if (!InScratch(i0 + (ulong)i))
                while (j < count && SameUffd(i0 + (ulong)i, i0 + (ulong)j) && !InScratch(i0 + (ulong)j) && t.TryClaim(i0 + (ulong)j)) j++;
            var n = j - i;
            try
            {
                if (n == 1) InstallClaimed(i0 + (ulong)i, wake: true, bytes.Slice(i * (int)Page, (int)Page));
                else InstallRunClaimed(i0 + (ulong)i, n, bytes.Slice(i * (int)Page, n * (int)Page));
            }
            catch
            {
                for (var k = i; k < j; k++) t.Abandon(i0 + (ulong)k);
                throw;
            }
            for (var k = i; k < j; k++)
            {
                t.Publish(i0 + (ulong)k);
                _bitmap?.Clear(i0 + (ulong)k);
                installed[k] = true;
            }
            done += n;
            i = j;
        }
        Interlocked.Add(ref _receiverInstalled, done);
        return done;
    }

    private bool InScratch(ulong index) => _inScratch is { } s && Volatile.Read(ref s[index]) != 0;

    private bool SameUffd(ulong a, ulong b) => _uffds.Length <= 1 || (a << 12) / _bytesPerUffd == (b << 12) / _bytesPerUffd;

    /// <summary>
    /// Installs <paramref name="pages"/> claimed, contiguous pages with one ioctl (same userfaultfd, none in scratch):
    /// anonymous, one UFFDIO_COPY; shmem, one pwrite into the page cache and one UFFDIO_CONTINUE; native userfault
    /// without a userfaultfd, a copy (anonymous) or the pwrite alone (shmem). Waiters in the range are woken.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside a transfer
    private void InstallRunClaimed(ulong index, int pages, ReadOnlySpan<byte> bytes)
    {
        var host = _ram!.HostOf(_tracker!.AddressOf(index));
        var len = (ulong)pages * Page;
        if (Options.Backing == Backing.Shmem)
        {
            _ram.WriteBacking(index << 12, bytes[..(int)len], nonTemporal: true);   // a run is pushed: no vCPU reads it now
            if (_uffds.Length == 0) return;
            var uffd = UffdOf(index);
            for (ulong off = 0; off < len;)
            {
                var o = uffd.Continue(host.Add(off), len - off, out var mapped);
                off += Advance(o, mapped, uffd, host.Add(off));
            }
            return;
        }
        fixed (byte* src = bytes)
        {
            if (_uffds.Length == 0) { Buffer.MemoryCopy(src, host.Pointer, len, len); return; }
            var uffd = UffdOf(index);
            for (ulong off = 0; off < len;)
            {
                var o = uffd.Copy(host.Add(off), src + off, len - off, out var copied);
                off += Advance(o, copied, uffd, host.Add(off));
            }
        }
    }

    /// <summary>
    /// Progress of one multi-page COPY/CONTINUE: all of it, the part the kernel did before it stopped (EAGAIN with a
    /// positive count: installed and woken already), or, when the first remaining page exists already (EEXIST: native
    /// userfault on a page never taken away), that page (kept, its waiters woken). EAGAIN with nothing done retries.
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

    private long _receiverInstalled;
    private readonly Counters _pushCounters = new();

    // ---- readers ----------------------------------------------------------------------------------------------

    private void ReaderLoop(Userfaultfd uffd, Counters c)
    {
        c.AllocStart = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            var timeout = _forwardToVcpu ? 5 : -1;
            while (true)
            {
                var ready = uffd.WaitReadable(_stop!, timeout);
                if (_stop!.IsSet) break;
                if (_forwardToVcpu) RescueStaleForwards(c);
                // one message per wake-up, as refpaging and the selftests do: draining until EAGAIN costs a read
                // syscall per fault on a 2-core host where the reader competes with the vCPU it just woke
                if (!ready || !uffd.TryReadFault(out var f)) continue;
                {
                    c.ReaderFaults++;
                    var idx = (f.Address - _ram!.Host.Value) >> 12;
                    if (_forwardToVcpu && !_kickIneffective && (_bitmap is null || _bitmap.IsMarked(idx)) && VcpuOfThread(f.ThreadId) is { } v
                        && _forwardable[v.Id])
                    {
                        Volatile.Write(ref _mailboxSince[v.Id], Stopwatch.GetTimestamp());
                        Volatile.Write(ref _mailbox[v.Id], (long)_tracker!.AddressOf(idx).Value + 1);
                        v.Kick();
                        c.Forwarded++;
                        continue;
                    }
                    Resolve(idx, wake: true, c);
                    _bitmap?.Clear(idx);
                }
            }
        }
        catch (Exception) when (_stop?.IsSet == true)
        {
            // teardown closed things under us
        }
        finally
        {
            c.Alloc = GC.GetAllocatedBytesForCurrentThread() - c.AllocStart;
            PageBuffer.Release();
        }
    }

    private Vcpu? VcpuOfThread(int tid)
    {
        var vcpus = _m!.Vcpus;
        for (var i = 0; i < vcpus.Count; i++) if (vcpus[i].ThreadId == tid) return vcpus[i];
        return null;
    }

    /// <summary>
    /// A kick that does not bring the vCPU out within 100 ms (at CPL0 on this host a signal does not interrupt a vCPU
    /// blocked in the userfaultfd wait, HOST.md) is rescued: the reader installs the page, which wakes the vCPU, and
    /// after three such rescues stops forwarding (one late kick on a loaded host is not proof). Detected at run time, reported in <see cref="PagingStats.Mechanism"/>.
    /// </summary>
    private void RescueStaleForwards(Counters c)
    {
        var now = Stopwatch.GetTimestamp();
        for (var i = 0; i < _mailbox.Length; i++)
        {
            var m = Volatile.Read(ref _mailbox[i]);
            if (m == 0 || Stopwatch.GetElapsedTime(Volatile.Read(ref _mailboxSince[i]), now) < TimeSpan.FromMilliseconds(100)) continue;
            if (Interlocked.CompareExchange(ref _mailbox[i], 0, m) != m) continue;
            if (Interlocked.Increment(ref _rescues) >= 3) _kickIneffective = true;
            var idx = _tracker!.IndexOf(new GuestAddress((ulong)m - 1));
            Resolve(idx, wake: true, c);
            UffdOf(idx).Wake(_ram!.HostOf(new GuestAddress((ulong)m - 1)), Page);
            _bitmap?.Clear(idx);
        }
    }

    // ---- vCPU exits ---------------------------------------------------------------------------------------------

    public void OnVcpuThreadStart(Vcpu vcpu)
    {
        // Forward faults only from vCPUs that start at CPL3: on kvm_pvm a signal does not interrupt a vCPU blocked in the
        // userfaultfd at CPL0 (HOST.md; it spins in the kernel instead), so there the readers resolve vCPU faults too.
        if (_forwardToVcpu) _forwardable[vcpu.Id] = (vcpu.GetSregs().Cs.Selector & 3) == 3;
        _decoders[vcpu.Id] ??= new FaultAddressDecoder(new GuestMemoryView(_m!, _tracker!));
        var c = _vcpuCounters[vcpu.Id];
        c.AllocStart = GC.GetAllocatedBytesForCurrentThread();
    }

    public void OnVcpuThreadStop(Vcpu vcpu)
    {
        var c = _vcpuCounters[vcpu.Id];
        c.Alloc += GC.GetAllocatedBytesForCurrentThread() - c.AllocStart;
        PageBuffer.Release();
    }

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
    {
        var c = _vcpuCounters[vcpu.Id];
        if (exit.Kind == VcpuExitKind.Interrupted)
        {
            var m = Interlocked.Exchange(ref _mailbox[vcpu.Id], 0);
            if (m == 0) return false;
            c.ExitFaults++;
            ResolveOnVcpu((ulong)m - 1, c, wake: true);
            return true;
        }
        if (exit.Kind != VcpuExitKind.MemoryFault || _tracker is null) return false;
        switch (exit.Form)
        {
            case MemoryFaultForm.MemoryFaultExit:
            case MemoryFaultForm.EmulatedMmio:
            {
                var first = exit.Address.Value & ~(Page - 1);
                var last = (exit.Address.Value + Math.Max(exit.Size, 1) - 1) & ~(Page - 1);
                if (!_tracker.Contains(new GuestAddress(first)) || !_tracker.Contains(new GuestAddress(last))) return false;
                c.ExitFaults++;
                for (var p = first; p <= last; p += Page) ResolveOnVcpu(p, c, wake: !_sigbus);
                if (exit.Form == MemoryFaultForm.EmulatedMmio) CompleteEmulatedAccess(vcpu, exit);
                return true;
            }
            case MemoryFaultForm.BareEfault:
            {
                if (!vcpu.HasSyncedRegs) return false;
                // special registers are cached per vCPU (CR3 rarely changes); a decode that finds nothing refreshes them once
                var found = ResolveDecoded(vcpu, c, refresh: false, out var handled);
                if (!found && !handled) found = ResolveDecoded(vcpu, c, refresh: true, out handled);
                if (!found) _sregsValid[vcpu.Id] = false; // nothing was missing: if it faults again, decode with fresh CR3
                return handled;
            }
        }
        return false;
    }

    private bool ResolveDecoded(Vcpu vcpu, Counters c, bool refresh, out bool handled)
    {
        ref var sregs = ref _sregs[vcpu.Id];
        if (refresh || !_sregsValid[vcpu.Id]) { sregs = vcpu.GetSregs(); _sregsValid[vcpu.Id] = true; }
        Span<ulong> gpas = stackalloc ulong[3];
        var n = _decoders[vcpu.Id]!.Candidates(in vcpu.SyncedRegs, in sregs, gpas);
        handled = false;
        var found = false;
        for (var i = 0; i < n; i++)
        {
            var p = gpas[i] & ~(Page - 1);
            if (!_tracker!.Contains(new GuestAddress(p))) continue;
            handled = true; // an access to guest RAM: if every candidate is present, another path installed it meanwhile; re-run
            var idx = _tracker.IndexOf(new GuestAddress(p));
            if (_tracker.IsPresent(idx) && (_bitmap is null || !_bitmap.IsMarked(idx))) continue;
            found = true;
            c.ExitFaults++;
            ResolveOnVcpu(p, c, wake: !_sigbus);
        }
        return found;
    }

    private void ResolveOnVcpu(ulong gpa, Counters c, bool wake)
    {
        var idx = _tracker!.IndexOf(new GuestAddress(gpa));
        if (_bitmap is not null && _bitmap.IsMarked(idx)) c.UserfaultExits++;
        Resolve(idx, wake, c);
        _bitmap?.Clear(idx); // release: the page is fixed before KVM can see the bit clear
    }

    /// <summary>CPL0 here: KVM's emulator turned the access into MMIO; the page is in now, so finish the access ourselves.</summary>
    private void CompleteEmulatedAccess(Vcpu vcpu, in VcpuExit exit)
    {
        var len = (int)Math.Min(exit.Size, 8u);
        var host = (byte*)_ram!.HostOf(exit.Address).Pointer;
        if (exit.IsWrite)
        {
            var data = exit.Data;
            Buffer.MemoryCopy(&data, host, len, len);
        }
        else vcpu.CompleteMmioRead(new ReadOnlySpan<byte>(host, len));
    }

    // ---- KVM Userfault bitmap API -------------------------------------------------------------------------------

    /// <summary>
    /// Marks a page userfault: the next vCPU access exits, even if the page was present. Native: set the bit and
    /// toggle KVM_MEM_USERFAULT to zap the slot's mappings. Emulated: set the bit and take the host page away (shmem:
    /// drop the mapping, the page cache keeps the bytes; anonymous: UFFDIO_MOVE it to a scratch area and back on
    /// resolve), so contents are kept and a concurrent guest write is never lost.
    /// </summary>
    public void MarkUserfault(GuestAddress page)
    {
        var bitmap = _bitmap ?? throw new InvalidOperationException($"mode {Options.Mode.Name()} has no userfault bitmap");
        var t = Tracker;
        var idx = t.IndexOf(page);
        if (!bitmap.Mark(idx)) return;
        if (_nativeUserfault)
        {
            lock (_slotLock)
            {
                _m!.Vm.SetUserfault(_m.RamSlot, default);   // toggling the flag zaps the slot's mappings
                _m.Vm.SetUserfault(_m.RamSlot, bitmap.Address);
            }
            return;
        }
        // take the page: Present → Installing (a lock against installers) → evicted → Missing
        if (!t.TryClaimPresent(idx)) return; // missing already (or being installed): the marked bit makes its next access exit
        try
        {
            var host = _ram!.HostOf(page);
            if (Options.Backing == Backing.Shmem) _ram.DropMapping(page, Page);
            else
            {
                EnsureScratch();
                var o = UffdOf(idx).Move(_scratch!.HostOf(_scratch.Base + (idx << 12)), host, Page);
                if (o != ResolveOutcome.Installed) throw new KvmException("UFFDIO_MOVE(evict)", Errno.EAGAIN);
                _inScratch![idx] = 1;
            }
        }
        finally
        {
            t.ReleaseToMissing(idx);
        }
    }

    /// <summary>
    /// Clears a page's bit: the page is fixed and its next access must not exit. Natively that is the bit alone;
    /// the emulation also puts back a page that <see cref="MarkUserfault"/> took away (its kept contents), since here
    /// a missing host page is what makes the vCPU exit.
    /// </summary>
    public void ClearUserfault(GuestAddress page)
    {
        var idx = Tracker.IndexOf(page);
        if (_bitmap is null || !_bitmap.IsMarked(idx)) return;
        if (!_nativeUserfault && _tracker!.StateOf(idx) != PageTracker.Present)
            lock (_pushCounters) Resolve(idx, wake: true, _pushCounters);
        _bitmap.Clear(idx);
    }

    public bool IsUserfault(GuestAddress page) => _bitmap?.IsMarked(Tracker.IndexOf(page)) ?? false;

    private readonly object _slotLock = new();

    private void EnsureScratch()
    {
        if (_scratch is not null) return;
        lock (_slotLock)
        {
            if (_scratch is not null) return;
            var s = GuestRegion.Create(_ram!.Base, _ram.Size, Backing.Anonymous, "faultline-evicted");
            for (var i = 0; i < _uffds.Length; i++)
                _uffds[i].Register(s.Host.Add((ulong)i * _bytesPerUffd), _bytesPerUffd, UffdRegisterMode.Missing);
            _inScratch = new byte[_tracker!.Pages];
            _scratch = s;
        }
    }

    // ---- stats and teardown -----------------------------------------------------------------------------------

    public PagingStats Snapshot()
    {
        var all = _vcpuCounters.Concat(_readerCounters).Append(_pushCounters).ToArray();
        return new PagingStats
        {
            Installed = all.Sum(c => c.Installed) + Interlocked.Read(ref _receiverInstalled),
            ReaderFaults = all.Sum(c => c.ReaderFaults),
            ExitFaults = all.Sum(c => c.ExitFaults),
            UserfaultExits = all.Sum(c => c.UserfaultExits),
            AlreadyPresent = all.Sum(c => c.AlreadyPresent),
            FaultPathAllocatedBytes = _vcpuCounters.Concat(_readerCounters).Sum(c => c.Alloc),
            EngineMemoryBytes = (_tracker?.MemoryBytes ?? 0) + (_bitmap?.MemoryBytes ?? 0) + (_inScratch?.Length ?? 0)
                + (_mailbox.Length + _mailboxSince.Length) * 8L,
            Mechanism = _mechanism + (_kickIneffective ? " (kicks did not interrupt blocked vCPUs: readers resolved them)" : "")
                + (_forwardToVcpu && !_forwardable.Any(f => f) ? " (guest at CPL0: readers resolve vCPU faults, a kick cannot interrupt the uffd wait there)" : ""),
        };
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop?.Set();
        foreach (var t in _readers) t.Join();
        foreach (var u in _uffds) u.Dispose();
        _stop?.Dispose();
        _bitmap?.Dispose();
        _scratch?.Dispose();
    }
}
