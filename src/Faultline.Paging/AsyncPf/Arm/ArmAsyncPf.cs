using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Paging.Engines;
using Faultline.Paging.Engines.Shared;
using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Paging.AsyncPf.Arm;

/// <summary>
/// Async page faults with arm64's guest ABI (seed 003, Gavin Shan's series) over the shared machinery of
/// <see cref="AsyncPfHost"/>, on this x86 host:
/// <list type="bullet">
/// <item>The guest asks the vendor-hypervisor SMCCC service (0x86000002, sub-function in x1) for its VERSION, SLOTS,
/// SDEI event and IRQ, registers and enables the SDEI event and unmasks its PE (<see cref="SdeiHost"/>), and ENABLEs the
/// service with its 64-byte control block | ENABLED [| SEND_ALWAYS].</item>
/// <item>"Not present (T)": reason = 1 and token = T in the control block, and the SDEI event dispatched at once (the
/// vCPU re-enters in its handler). The block is the guest's until the handler COMPLETEs.</item>
/// <item>"Page ready (T)": reason = 2 and token = T in the block, and the PPI (a vector here, KVM_INTERRUPT from the
/// vCPU's thread as for x86) posted. The block is the guest's until its IRQ_ACK, which releases the next "page ready"
/// (seed 003's steps 3–5: one at a time). A fault exit while the guest holds a "page ready" is re-entered unresolved:
/// the PPI goes in first, the access faults again after it (<see cref="AsyncPfStats.Retries"/>).</item>
/// <item>Without SEND_ALWAYS, "not present" goes only to a guest in user mode; an SDEI event that cannot be dispatched
/// (PE masked, event disabled or unregistered, a handler running) leaves the fault synchronous.</item>
/// </list>
/// The VMM's control path (seed 003's GET_VERSION, GET/SET_SDEI, GET/SET_IRQ, GET/SET_CONTROL) is
/// <see cref="GetVersion"/> … <see cref="SetControl"/>, with <see cref="CaptureVcpu"/>/<see cref="RestoreVcpu"/> for what
/// a migration carries.
/// </summary>
public sealed class ArmAsyncPf : AsyncPfHost, ISmcccService, ISdeiListener, IAsyncPfServiceHost
{
    private const byte BlockFree = 0, BlockNotPresent = 1, BlockReady = 2;
    private readonly byte[] _block;

    internal ArmAsyncPf(GuestMachine machine, PageTracker tracker, FaultPath path, AsyncPfOptions options, int historyPerVcpu = 1 << 14)
        : base(machine, tracker, path, options, historyPerVcpu)
    {
        Sdei = new SdeiHost(machine, [options.ArmEvent]) { Vendor = this, Listener = this };
        _block = new byte[machine.Config.Vcpus];
        foreach (var s in Vcpus) s.IntMsr = options.ArmReadyVector;
    }

    public override AsyncPfProtocol Protocol => AsyncPfProtocol.Arm;
    /// <summary>The SDEI dispatcher the guest's calls reach (its state per vCPU).</summary>
    public SdeiHost Sdei { get; }

    private protected override void PrepareVm() { }

    internal override void OnLoopStart(VcpuLoop loop)
    {
        Sdei.OnVcpuThreadStart(loop.Vcpu);
        base.OnLoopStart(loop);
    }

    private protected override bool Enabled(AsyncPfVcpu s) => (s.EnableMsr & ArmPvAsyncPf.Enabled) != 0;
    private protected override bool SendAlways(AsyncPfVcpu s) => (s.EnableMsr & ArmPvAsyncPf.SendAlways) != 0;
    private protected override bool InUserMode(Vcpu vcpu) => (vcpu.HasSyncedSregs ? vcpu.SyncedSregs.Cs.Dpl : vcpu.GetSregs().Cs.Dpl) == 3;
    internal const int EventSlot = 1;   // SdeiEvents: slot 0 is the software-signalled event, 1 the VMM's

    private protected override SyncReason? Gate(Vcpu vcpu, AsyncPfVcpu s)
    {
        if (_block[s.Id] == BlockReady) return SyncReason.Retry;
        if (_block[s.Id] == BlockNotPresent || !Sdei.EventsOf(s.Id).CanDispatch(EventSlot)) return SyncReason.EventBlocked;
        return null;
    }

    private protected override void NotifyNotPresent(Vcpu vcpu, AsyncPfVcpu s, uint token)
    {
        WriteGuest(s.AreaGpa + ReasonOffset, ReasonPageNotPresent);
        WriteGuest(s.AreaGpa + TokenOffset, token);
        _block[s.Id] = BlockNotPresent;
        if (!Sdei.SignalNow(vcpu, Sdei.EventsOf(s.Id).NumberOf(EventSlot)))
            throw new InvalidOperationException($"vCPU {s.Id}: the async-PF SDEI event passed the gate but was not dispatched");
    }

    private protected override bool CanNotifyReady(AsyncPfVcpu s) => _block[s.Id] == BlockFree;

    private protected override void NotifyReady(AsyncPfVcpu s, uint token)
    {
        WriteGuest(s.AreaGpa + ReasonOffset, ReasonPageReady);
        WriteGuest(s.AreaGpa + TokenOffset, token);
        _block[s.Id] = BlockReady;
        s.Loop!.TryPost(VcpuEvent.Interrupt((byte)s.IntMsr));   // kicks the vCPU when posted from another thread
    }

    private protected override void OnDisabled(AsyncPfVcpu s) => _block[s.Id] = BlockFree;

    private protected override void CheckRegistration(int vcpu, AsyncPfVcpuState state)
    {
        if ((state.EnableMsr & ReservedBits) != 0) throw new UsageException($"vCPU {vcpu}: the async-PF control word 0x{state.EnableMsr:x} has reserved bits set");
        if (state.InterruptMsr is < 32 or > 255) throw new UsageException($"vCPU {vcpu}: the page-ready interrupt {state.InterruptMsr} is not a vector of 32..255");
    }

    private protected override void OnImportedDelivered(AsyncPfVcpu s) => _block[s.Id] = BlockReady;   // the guest's until its IRQ_ACK

    private protected override bool TryHandleProtocolExit(Vcpu vcpu, in VcpuExit exit) => Sdei.TryHandleExit(vcpu, exit);

    void ISdeiListener.OnCompleted(Vcpu vcpu, uint number)
    {
        var s = Vcpus[vcpu.Id];
        if (number != Sdei.EventsOf(s.Id).NumberOf(EventSlot)) return;
        lock (s.Lock)
        {
            if (_block[s.Id] == BlockNotPresent) _block[s.Id] = BlockFree;   // the handler has read the block
            DeliverNext(s);
        }
    }

    bool ISmcccService.TryCall(Vcpu vcpu, uint function, ref KvmRegs r) => AsyncPfService.TryCall(this, vcpu, function, ref r);
    int IAsyncPfServiceHost.Slots => Options.Limit;
    uint IAsyncPfServiceHost.EventOf(int vcpu) => GetSdei(vcpu);
    byte IAsyncPfServiceHost.IrqOf(int vcpu) => (byte)Vcpus[vcpu].IntMsr;
    void IAsyncPfServiceHost.Enable(int vcpu, ulong word) => SetEnableWord(Vcpus[vcpu], word);
    void IAsyncPfServiceHost.IrqAck(int vcpu)
    {
        var s = Vcpus[vcpu];
        lock (s.Lock) if (_block[s.Id] == BlockReady) _block[s.Id] = BlockFree;
        OnAck(s);
    }

    // the VMM's control path (seed 003): per vCPU, before it runs or while it is stopped

    /// <summary>GET_VERSION: major.minor.revision, a byte each.</summary>
    public static ulong GetVersion() => ArmPvAsyncPf.Version;
    /// <summary>GET_SDEI: the event "not present" is signalled with.</summary>
    public uint GetSdei(int vcpu) => Sdei.EventsOf(vcpu).NumberOf(EventSlot);
    /// <summary>SET_SDEI: another event number (the guest has not registered the current one).</summary>
    public void SetSdei(int vcpu, uint number) => Sdei.EventsOf(vcpu).Renumber(EventSlot, number);
    /// <summary>GET_IRQ: the "page ready" interrupt (a vector on this host).</summary>
    public byte GetIrq(int vcpu) { var s = Vcpus[vcpu]; lock (s.Lock) return (byte)s.IntMsr; }
    public void SetIrq(int vcpu, byte vector)
    {
        if (vector < 32) throw new UsageException($"the page-ready interrupt must be a vector of 32..255, not {vector}");
        var s = Vcpus[vcpu];
        lock (s.Lock) s.IntMsr = vector;
    }
    /// <summary>GET_CONTROL: the guest's ENABLE word (control block GPA | ENABLED | SEND_ALWAYS).</summary>
    public ulong GetControl(int vcpu) { var s = Vcpus[vcpu]; lock (s.Lock) return s.EnableMsr; }
    public void SetControl(int vcpu, ulong word)
    {
        if ((word & ReservedBits) != 0) throw new UsageException($"control word 0x{word:x} has reserved bits set");
        var s = Vcpus[vcpu];
        lock (s.Lock) s.EnableMsr = word;
    }

    /// <summary>
    /// What a migration carries of vCPU <paramref name="vcpu"/>'s SDEI beside <see cref="AsyncPfHost.Export"/> (which
    /// holds the ENABLE word, the PPI and the outstanding tokens): the async-PF event's number and every event's
    /// registration. A vCPU stopped inside an SDEI handler is refused: its interrupted context is the dispatcher's, not
    /// the guest's, and does not travel (a migration source never dispatches one: all its memory is present).
    /// </summary>
    public ArmSdeiRegistration ExportSdei(int vcpu)
    {
        if (_block[vcpu] == BlockNotPresent) throw new InvalidOperationException($"vCPU {vcpu} is inside its SDEI handler: stop it outside one to carry its state");
        return Sdei.Export(vcpu, EventSlot);
    }

    /// <summary>Takes <see cref="ExportSdei"/>'s (or <see cref="ArmAsyncPfRegisters.ExportSdei"/>'s) on a vCPU that has not run; before <see cref="AsyncPfHost.Import"/>.</summary>
    public void ImportSdei(int vcpu, ArmSdeiRegistration r) => Sdei.Import(vcpu, EventSlot, r);

    /// <summary>Everything the VMM carries for one vCPU: the service's configuration and the SDEI registrations.</summary>
    public ArmAsyncPfState CaptureVcpu(int vcpu) => new(GetSdei(vcpu), GetIrq(vcpu), GetControl(vcpu), Sdei.EventsOf(vcpu).Capture());

    public void RestoreVcpu(int vcpu, ArmAsyncPfState state)
    {
        if (GetSdei(vcpu) != state.Event) SetSdei(vcpu, state.Event);
        SetIrq(vcpu, state.Irq);
        SetControl(vcpu, state.Control);
        Sdei.EventsOf(vcpu).Restore(state.Sdei);
    }
}

/// <summary>One vCPU's arm async-PF state as the VMM's control path reads and writes it.</summary>
public sealed record ArmAsyncPfState(uint Event, byte Irq, ulong Control, SdeiState Sdei);

/// <summary>
/// One vCPU's SDEI side of the arm protocol as a migration carries it: the async-PF event's number, the PE's events, and
/// the code and stack segments its handlers run with (those it registered from).
/// </summary>
public sealed record ArmSdeiRegistration(uint AsyncPfEvent, SdeiState Events, KvmSegment HandlerCs, KvmSegment HandlerSs);
