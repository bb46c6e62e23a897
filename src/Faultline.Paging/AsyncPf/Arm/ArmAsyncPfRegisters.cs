using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;

namespace Faultline.Paging.AsyncPf.Arm;

/// <summary>
/// arm's <see cref="IAsyncPfRegistration"/>: the SMCCC conduit with the SDEI dispatcher (<see cref="SdeiHost"/>) and the
/// async-PF service, answering the guest's VERSION, SLOTS, SDEI, IRQ, ENABLE and its SDEI registration as
/// <see cref="ArmAsyncPf"/> does, and keeping the ENABLE word and the PE's events per vCPU. No event is ever signalled
/// here (nothing is missing), so no handler ever runs and IRQ_ACK has nothing to release.
/// </summary>
public sealed class ArmAsyncPfRegisters : IAsyncPfRegistration, ISmcccService, IAsyncPfServiceHost
{
    private const int EventSlot = ArmAsyncPf.EventSlot;
    private readonly ulong[] _control;
    private readonly byte _irq;

    /// <summary>On <paramref name="machine"/>'s VM before its vCPUs run: the conduit's MMIO page is unbacked already (the guest layout's).</summary>
    public ArmAsyncPfRegisters(GuestMachine machine, AsyncPfOptions options)
    {
        Sdei = new SdeiHost(machine, [options.ArmEvent]) { Vendor = this };
        _control = new ulong[machine.Config.Vcpus];
        _irq = options.ArmReadyVector;
        Slots = options.Limit;
        foreach (var v in machine.Vcpus) Sdei.OnVcpuThreadStart(v);   // synced CS/SS: set in kvm_run before the first KVM_RUN
    }

    public AsyncPfProtocol Protocol => AsyncPfProtocol.Arm;
    public SdeiHost Sdei { get; }
    public int Slots { get; }

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) => Sdei.TryHandleExit(vcpu, exit);

    bool ISmcccService.TryCall(Vcpu vcpu, uint function, ref KvmRegs regs) => AsyncPfService.TryCall(this, vcpu, function, ref regs);
    uint IAsyncPfServiceHost.EventOf(int vcpu) => Sdei.EventsOf(vcpu).NumberOf(EventSlot);
    byte IAsyncPfServiceHost.IrqOf(int vcpu) => _irq;
    void IAsyncPfServiceHost.Enable(int vcpu, ulong word) => Volatile.Write(ref _control[vcpu], word);
    void IAsyncPfServiceHost.IrqAck(int vcpu) { }

    public AsyncPfVcpuState Export(int vcpu) => new(Volatile.Read(ref _control[vcpu]), _irq, 0, []);

    /// <summary>The async-PF event's number and the PE's events (the vCPU stopped).</summary>
    public ArmSdeiRegistration ExportSdei(int vcpu) => Sdei.Export(vcpu, EventSlot);
}
