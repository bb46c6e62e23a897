using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Exits;

/// <summary>
/// <c>exits</c>: the faulting vCPU does not sleep in a wait queue; it leaves KVM_RUN and resolves its own fault on its
/// own thread. With UFFD_FEATURE_SIGBUS (the default) KVM_RUN returns at once; a CPL3 fault, which this host reports
/// without an address, is located by instruction decode (<see cref="ExitResolver"/>). With
/// <see cref="AddressRecovery.UffdThreadId"/> the userfaultfd blocks instead, and a reader forwards the address and
/// kicks the faulting vCPU out (<see cref="ForwardMailbox"/>).
/// </summary>
public sealed class FaultExitEngine(PagingOptions options) : PagingEngine(options), IUffdFaultHandler
{
    private ExitResolver? _resolver;
    private ForwardMailbox? _mailbox;
    private readonly UffdReaderPool _readers = new();
    private bool Forwarding => Options.AddressRecovery == AddressRecovery.UffdThreadId;

    internal override UffdSet OpenUffds(GuestMachine machine) =>
        UffdSet.Open(machine.Ram, Forwarding ? UffdFeatures.ThreadId : UffdFeatures.Sigbus, Options.Uffds, machine.Config.Vcpus);

    internal override bool WakeOnInstall => Forwarding;   // SIGBUS: nobody sleeps in the userfaultfd

    internal override bool SupportsAsyncPf => true;   // faults exit: the vCPU thread decides

    internal override void Prepare(GuestMachine machine, IPageSource source)
    {
        if (Forwarding) _mailbox = new ForwardMailbox(machine);
        _resolver = new ExitResolver(machine, Tracker, Path, null) { Mailbox = _mailbox, Async = AsyncPf };
        if (Forwarding)
        {
            _readers.Start(Installer.Uffds, Options.Readers, this, pollIdle: true);
            Mechanism = "blocking userfaultfd + THREAD_ID: reader kicks the faulting vCPU, which installs the page";
        }
        else Mechanism = "SIGBUS userfaultfd: the vCPU exits KVM_RUN and installs the page (CPL3 address by instruction decode)";
    }

    internal override void OnStart(Vcpu vcpu) => _resolver!.OnVcpuThreadStart(vcpu);

    internal override bool HandleExit(Vcpu vcpu, in VcpuExit exit, FaultCounters c) => _resolver!.TryHandle(vcpu, exit, c);

    void IUffdFaultHandler.OnFault(in UffdFault f, FaultCounters c)
    {
        var idx = (f.Address - Machine.Ram.Host.Value) >> 12;
        if (_mailbox!.TryForward(f.ThreadId, Tracker.AddressOf(idx))) { c.Forwarded++; return; }
        if (!Path.Resolve(idx)) c.AlreadyPresent++;
    }

    void IUffdFaultHandler.OnIdle(FaultCounters c) => RescueStale(_mailbox!, Tracker, Path, Installer.Uffds, Machine.Ram);

    /// <summary>Forwards whose kick did not arrive: the reader installs the page (waking the vCPU asleep in the userfaultfd).</summary>
    internal static void RescueStale(ForwardMailbox mailbox, PageTracker tracker, FaultPath path, UffdSet uffds, GuestRegion ram)
    {
        Span<ulong> stale = stackalloc ulong[8];
        var n = mailbox.TakeStale(stale);
        for (var i = 0; i < n; i++)
        {
            var idx = tracker.IndexOf(new GuestAddress(stale[i]));
            path.Resolve(idx);
            uffds.Of(idx).Wake(ram.HostOf(new GuestAddress(stale[i])), GuestAddress.PageSize);
        }
    }

    internal override IReadOnlyList<FaultCounters> ReaderCounters => _readers.Counters;
    internal override long ExtraMemoryBytes => _mailbox?.MemoryBytes ?? 0;
    internal override string MechanismSuffix => _mailbox?.Describe() ?? "";

    protected override void DisposeMechanism()
    {
        _readers.Dispose();
        OpenedUffds.Dispose();
    }
}
