namespace Faultline.Migration.Source;

/// <summary>
/// How the source's pause went: for each vCPU, the time from the pause's start to its thread seeing the pause flag
/// (out of KVM_RUN) and what brought it out; and the self-kick timers' cost while they were armed ("pause imminent":
/// from the Layout frame sent to the pause).
/// </summary>
/// <param name="SelfKickPeriodUs">The self-kick timer's period (0: off, only the cross-CPU kick).</param>
/// <param name="VcpuStopMs">Per vCPU: pause start → out of KVM_RUN with the pause flag seen.</param>
/// <param name="StoppedBy">Per vCPU: what ended its last KVM_RUN.</param>
/// <param name="VcpuParkedMs">Per vCPU: pause start → its state captured (three vCPU ioctls) and the pausing thread signalled.</param>
/// <param name="WindowMs">Pause window opened (Layout sent) → pause start.</param>
/// <param name="ArmedMs">Per vCPU: how long its timer was armed, over the source's life (a failed attempt's window included).</param>
/// <param name="SelfKicks">Per vCPU: timer expiries it drained (each one an Interrupted exit while armed), over the same time.</param>
public sealed record SourcePauseStats(
    double SelfKickPeriodUs, double[] VcpuStopMs, VcpuStopCause[] StoppedBy, double[] VcpuParkedMs, double WindowMs, double[] ArmedMs, long[] SelfKicks)
{
    /// <summary>Self-kick exits per second of armed time, per vCPU (the guest's cost of the timer).</summary>
    public double SelfKicksPerSecond
    {
        get
        {
            var armed = ArmedMs.Sum();
            return armed > 0 ? SelfKicks.Sum() / (armed / 1000) : 0;
        }
    }
}
