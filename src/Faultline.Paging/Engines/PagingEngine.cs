using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;
using Faultline.Paging.Engines.Bitmap;
using Faultline.Paging.AsyncPf;

namespace Faultline.Paging.Engines;

/// <summary>
/// What every engine shares: the tracker, the installer (the source's sink), the fault path and the per-thread
/// counters. A mechanism says in <see cref="Prepare"/> how guest RAM is set up (populated, registered, marked) and, if
/// it has any, starts its readers; vCPU exits go to <see cref="HandleExit"/>.
/// </summary>
public abstract class PagingEngine : IPagingEngine
{
    private int _disposed;
    private GuestMachine? _machine;
    private PageTracker? _tracker;
    private PageInstaller? _installer;
    private FaultPath? _path;
    private FaultCounters[] _vcpuCounters = [];
    private AsyncPfHost? _async;

    protected PagingEngine(PagingOptions options) => Options = options;

    public PagingOptions Options { get; }
    public PageTracker Tracker => _tracker ?? throw new InvalidOperationException("engine not started");
    public IPageSink Sink => Installer;
    internal PageInstaller Installer => _installer ?? throw new InvalidOperationException("engine not started");
    /// <summary>The userfaultfds, if Start got as far as opening them (for teardown).</summary>
    internal UffdSet OpenedUffds => _installer?.Uffds ?? UffdSet.None;
    internal FaultPath Path => _path ?? throw new InvalidOperationException("engine not started");
    protected GuestMachine Machine => _machine ?? throw new InvalidOperationException("engine not started");
    /// <summary>The mechanism as it runs on this host, for reports.</summary>
    protected string Mechanism { get; set; } = "";

    public void Start(GuestMachine machine, IPageSource source)
    {
        if (_machine is not null) throw new InvalidOperationException("engine already started");
        Options.Validate(machine.Config.Vcpus);
        if (machine.Config.Backing != Options.Backing)
            throw new UsageException($"engine wants {Options.Backing} memory but the machine has {machine.Config.Backing}");
        _machine = machine;
        _tracker = new PageTracker(machine.Ram.Base, machine.Ram.Size);
        _vcpuCounters = new FaultCounters[machine.Config.Vcpus];
        for (var i = 0; i < _vcpuCounters.Length; i++) _vcpuCounters[i] = new FaultCounters();
        LazyShmem = Options.Backing == Backing.Shmem && ServesFaults && !Options.PrefillPageCache && !machine.Ram.BackingAllocated
            && SupportsLazyPageCache;
        var uffds = OpenUffds(machine);
        _installer = new PageInstaller(machine.Ram, _tracker, uffds) { Wake = WakeOnInstall, Bitmap = Bitmap, LazyShmem = LazyShmem };
        var inPlace = Options.Backing == Backing.Shmem && Options.PrefillPageCache && ServesFaults;
        if (Options.Backing == Backing.Shmem && ServesFaults)
        {
            // shmem keeps the content in the page cache: filled from the source up front (seed 002 does the same);
            // (post-copy) allocated now through a populated view, so that every later install is a copy into an existing
            // page plus a UFFDIO_CONTINUE, and MINOR faults still fire before the real bytes are there; or (a lazy page
            // cache) not allocated at all: each page goes in at its install, and the view is only mapped
            if (Options.PrefillPageCache) PageCache.Fill(machine.Ram, Immediate(source, "filling the page cache up front"));
            else machine.Ram.MapBackingView(populate: !LazyShmem);
        }
        _path = new FaultPath(_tracker, source, _installer, inPlace, Options.PageTimeout);
        if (Options.AsyncPf.Mode != AsyncPfMode.Never)
        {
            if (!SupportsAsyncPf)
                throw new UsageException($"--async-pf {Options.AsyncPf.Mode.ToString().ToLowerInvariant()} needs an engine whose faults exit (exits, bitmap), not {Options.Mode.Name()}: there the vCPU sleeps inside KVM");
            _async = Options.AsyncPf.Protocol == AsyncPfProtocol.Arm
                ? new AsyncPf.Arm.ArmAsyncPf(machine, _tracker, _path, Options.AsyncPf)
                : new UserspaceAsyncPf(machine, _tracker, _path, Options.AsyncPf);
            _async.Prepare();
        }
        source.Start(_installer);
        Prepare(machine, source);
    }

    /// <summary>
    /// Shmem whose page cache fills on demand: nothing of it is allocated before the guest runs, guest RAM is registered
    /// MISSING and MINOR, and each install puts its page in (UFFDIO_COPY). Set at Start: an engine that supports it, the
    /// page cache not filled up front (<see cref="PagingOptions.PrefillPageCache"/> false) and not allocated already by
    /// the caller (a migration destination allocates it before the engine starts).
    /// </summary>
    protected bool LazyShmem { get; private set; }
    /// <summary>Whether this mechanism can run on a lazy page cache (<see cref="LazyShmem"/>).</summary>
    internal virtual bool SupportsLazyPageCache => false;
    /// <summary>Opens and registers the mechanism's userfaultfds (none by default).</summary>
    internal virtual UffdSet OpenUffds(GuestMachine machine) => UffdSet.None;
    /// <summary>Whether faults reach the engine at all (false: memory is populated up front and the engine sets up shmem itself).</summary>
    internal virtual bool ServesFaults => true;
    /// <summary>Whether installs wake threads asleep in the userfaultfd (false where faults exit instead of sleeping).</summary>
    internal virtual bool WakeOnInstall => true;
    /// <summary>Whether faults reach the vCPU's own thread, so that one can be made an async page fault.</summary>
    internal virtual bool SupportsAsyncPf => false;
    /// <summary>The async page fault host, when <see cref="PagingOptions.AsyncPf"/> asks for one.</summary>
    public AsyncPfHost? AsyncPf => _async;
    /// <summary>The userfault bitmap, for engines that have one.</summary>
    internal virtual UserfaultBitmap? Bitmap => null;
    /// <summary>Sets up guest RAM for the mechanism and starts its threads.</summary>
    internal abstract void Prepare(GuestMachine machine, IPageSource source);
    /// <summary>A vCPU exit on that vCPU's thread; false = not this engine's.</summary>
    internal virtual bool HandleExit(Vcpu vcpu, in VcpuExit exit, FaultCounters counters) => false;
    internal virtual void OnStart(Vcpu vcpu) { }
    /// <summary>Reader-thread counters, for the stats.</summary>
    internal virtual IReadOnlyList<FaultCounters> ReaderCounters => [];
    internal virtual long ExtraMemoryBytes => 0;
    internal virtual string MechanismSuffix => "";
    protected virtual void DisposeMechanism() { }

    internal static IImmediatePageSource Immediate(IPageSource source, string what) =>
        source as IImmediatePageSource ?? throw new UsageException($"{what} needs a source with its bytes at hand, not {source.Describe()}");

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) =>
        _tracker is not null && ((_async is not null && _async.TryHandleExit(vcpu, exit)) || HandleExit(vcpu, exit, _vcpuCounters[vcpu.Id]));

    public void OnVcpuLoopStart(VcpuLoop loop) => _async?.OnLoopStart(loop);

    public void OnVcpuThreadStart(Vcpu vcpu)
    {
        OnStart(vcpu);
        _vcpuCounters[vcpu.Id].BeginThread();
    }

    public void OnVcpuThreadStop(Vcpu vcpu)
    {
        _async?.OnThreadStop(vcpu);
        _vcpuCounters[vcpu.Id].EndThread();
        PageBuffer.Release();
    }

    public PagingStats Snapshot()
    {
        var readers = ReaderCounters;
        long Sum(Func<FaultCounters, long> f) => _vcpuCounters.Sum(f) + readers.Sum(f);
        return new PagingStats
        {
            Installed = _installer?.Installed ?? 0,
            ReaderFaults = Sum(c => c.ReaderFaults),
            MissingFaults = Sum(c => c.MissingFaults),
            MinorFaults = Sum(c => c.MinorFaults),
            ReaderEmptyWakeups = Sum(c => c.ReaderEmptyWakeups),
            ExitFaults = Sum(c => c.ExitFaults),
            UserfaultExits = Sum(c => c.UserfaultExits),
            AsyncFaults = Sum(c => c.AsyncFaults),
            AlreadyPresent = Sum(c => c.AlreadyPresent),
            FaultPathAllocatedBytes = _vcpuCounters.Sum(c => c.Alloc) + readers.Sum(c => c.Alloc),
            EngineMemoryBytes = (_tracker?.MemoryBytes ?? 0) + (Bitmap?.MemoryBytes ?? 0) + ExtraMemoryBytes,
            Mechanism = Mechanism + MechanismSuffix,
        };
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _tracker?.Fail(new PageUnavailableException("the paging engine is shutting down"));
        DisposeMechanism();
        _tracker?.Dispose();
    }
}
