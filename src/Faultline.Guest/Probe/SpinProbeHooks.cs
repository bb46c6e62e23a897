using System.Diagnostics;

namespace Faultline.Guest.Probe;

/// <summary>
/// The spin probe's hooks: the Spin workload makes no guest call, so the loop runs until the probe stops it; the time is
/// taken on the vCPU thread from before the first KVM_RUN to the last exit, so a late kick does not skew the rate.
/// </summary>
internal sealed class SpinProbeHooks(PrivilegeLevel level) : IVcpuHooks
{
    private long _firstRun;

    public VcpuLoopAction BeforeRun(VcpuLoop loop)
    {
        if (_firstRun == 0) _firstRun = Stopwatch.GetTimestamp();
        return VcpuLoopAction.Continue;
    }

    public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call) =>
        throw new GuestException($"probe: guest call {call.Op} ({call.Value:x}) from the spin workload");

    /// <summary>On the vCPU thread after the loop: RBX counts the loop's iterations.</summary>
    public SpinRate Result(VcpuLoop loop, VcpuLoopEnd end)
    {
        if (end != VcpuLoopEnd.Stopped || loop.Exits == 0) throw new GuestException($"probe: the spin vCPU ended {end} after {loop.Exits} exits");
        return new SpinRate(level, loop.Vcpu.GetRegs().Rbx, Stopwatch.GetElapsedTime(_firstRun, loop.LastExitTimestamp));
    }
}
