using Faultline.Kvm;
using Faultline.Kvm.Memory;

namespace Faultline.Guest.Probe;

/// <summary>
/// The missing-page probe's hooks and exit handler: the first memory-fault exit is classified and ends the loop; a
/// done() means the access completed without one.
/// </summary>
internal sealed class MissingPageProbe(PrivilegeLevel level, GuestAddress target) : IVcpuHooks, IExitHandler
{
    public FaultExitObservation? Observation { get; private set; }

    public VcpuLoopAction BeforeRun(VcpuLoop loop) => Observation is null ? VcpuLoopAction.Continue : VcpuLoopAction.Finish;

    public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
    {
        if (call.Op == GuestOp.Report) return VcpuLoopAction.Continue;   // the read completed: no fault reached us
        Observation = new FaultExitObservation(level, FaultExitKind.None, target.Value, false, null, null, loop.LastExit.RawReason,
            "guest completed without a fault exit");
        return VcpuLoopAction.Finish;
    }

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
    {
        if (exit.Kind != VcpuExitKind.MemoryFault) return false;
        Observation = Classify(exit);
        return true;
    }

    /// <summary>On the vCPU thread after the loop.</summary>
    public FaultExitObservation Result(VcpuLoop loop, VcpuLoopEnd end) => Observation
        ?? throw new GuestException($"probe: the {(level == PrivilegeLevel.Kernel ? "CPL0" : "CPL3")} missing-page vCPU was stopped before any exit");

    private FaultExitObservation Classify(in VcpuExit exit)
    {
        var kind = exit.Form switch
        {
            MemoryFaultForm.MemoryFaultExit => FaultExitKind.MemoryFault,
            MemoryFaultForm.EmulatedMmio => FaultExitKind.Mmio,
            _ => FaultExitKind.Efault,
        };
        return new FaultExitObservation(level, kind, target.Value, exit.HasAddress, exit.HasAddress ? exit.Address.Value : null,
            exit.Form == MemoryFaultForm.EmulatedMmio ? exit.IsWrite : null, exit.RawReason, exit.ToString());
    }
}
