using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;
using Faultline.Paging.Engines.Exits;

namespace Faultline.Paging.Engines.Bitmap;

/// <summary>
/// Seed 002's combined rows, <c>missing+bitmap</c> and <c>minor+bitmap</c>: the userfault bitmap for vCPU faults, a
/// userfaultfd with readers for every other access (a host thread touching guest RAM). Native: KVM_MEM_USERFAULT plus
/// a blocking userfaultfd. Emulated here: a blocking THREAD_ID userfaultfd; a reader hands a vCPU's fault on a marked
/// page to that vCPU (kick, <see cref="ForwardMailbox"/>) and resolves every other fault itself.
/// </summary>
public sealed class ReaderBitmapEngine(PagingOptions options) : PagingEngine(options), IUserfaultBitmap, IUffdFaultHandler
{
    private UserfaultBitmap? _bitmap;
    private UserfaultMarks? _marks;
    private ExitResolver? _resolver;
    private ForwardMailbox? _mailbox;
    private readonly UffdReaderPool _readers = new();
    private bool _native;

    internal override UserfaultBitmap? Bitmap => _bitmap;
    public bool IsNative => _native;

    internal override UffdSet OpenUffds(GuestMachine machine)
    {
        _bitmap = new UserfaultBitmap(machine.Ram.PageCount);
        _native = Options.PreferNativeUserfault && Vm.ProbeNativeUserfault(machine.Kvm);
        return UffdSet.Open(machine.Ram, _native ? UffdFeatures.None : UffdFeatures.ThreadId, Options.Uffds, machine.Config.Vcpus);
    }

    internal override bool SupportsAsyncPf => true;   // faults exit: the vCPU thread decides

    internal override void Prepare(GuestMachine machine, IPageSource source)
    {
        _marks = new UserfaultMarks(machine, _bitmap!, Tracker, Installer.Uffds, _native);
        Installer.Evicted = _marks;
        if (!_native) _mailbox = new ForwardMailbox(machine);
        _resolver = new ExitResolver(machine, Tracker, Path, _bitmap) { Mailbox = _mailbox, Async = AsyncPf };
        _marks.MarkAll();
        _readers.Start(Installer.Uffds, Options.Readers, this, pollIdle: !_native);
        Mechanism = _native
            ? "native KVM_MEM_USERFAULT bitmap + userfaultfd readers for non-vCPU accesses"
            : "emulated KVM Userfault: blocking userfaultfd + THREAD_ID; vCPU faults on marked pages kicked out to the vCPU";
    }

    internal override void OnStart(Vcpu vcpu) => _resolver!.OnVcpuThreadStart(vcpu);

    internal override bool HandleExit(Vcpu vcpu, in VcpuExit exit, FaultCounters c) => _resolver!.TryHandle(vcpu, exit, c);

    void IUffdFaultHandler.OnFault(in UffdFault f, FaultCounters c)
    {
        var idx = (f.Address - Machine.Ram.Host.Value) >> 12;
        if (_mailbox is not null && _bitmap!.IsMarked(idx) && _mailbox.TryForward(f.ThreadId, Tracker.AddressOf(idx))) { c.Forwarded++; return; }
        if (!Path.Resolve(idx)) c.AlreadyPresent++;
    }

    void IUffdFaultHandler.OnIdle(FaultCounters c)
    {
        if (_mailbox is not null) FaultExitEngine.RescueStale(_mailbox, Tracker, Path, Installer.Uffds, Machine.Ram);
    }

    public void MarkUserfault(GuestAddress page) => Marks.Mark(page);
    public void ClearUserfault(GuestAddress page) => Marks.Clear(page, Path);
    public bool IsUserfault(GuestAddress page) => Marks.IsMarked(page);
    private UserfaultMarks Marks => _marks ?? throw new InvalidOperationException("engine not started");

    internal override IReadOnlyList<FaultCounters> ReaderCounters => _readers.Counters;
    internal override long ExtraMemoryBytes => (_marks?.MemoryBytes ?? 0) + (_mailbox?.MemoryBytes ?? 0);
    internal override string MechanismSuffix => _mailbox?.Describe() ?? "";

    protected override void DisposeMechanism()
    {
        _readers.Dispose();
        OpenedUffds.Dispose();
        _marks?.Dispose();
        _bitmap?.Dispose();
    }
}
