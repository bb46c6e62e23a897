namespace Faultline.Migration.Reporting;

/// <summary>How one migration scheduled its demand path (<see cref="ThreadPriority"/>), and what the switching cost.</summary>
/// <param name="Destination">The destination's policy (after any fallback at run time).</param>
/// <param name="Detail">The destination's policy in words, or why SCHED_FIFO was not used.</param>
/// <param name="Source">The source's policy, from its summary.</param>
/// <param name="SwitchPairIdleUs">One raise + one lower on the destination's main thread after post-copy: thread CPU time, mean of 200.</param>
/// <param name="FaultSwitches">vCPU fault exits that were raised at the exit and lowered before KVM_RUN.</param>
/// <param name="RaisePerFaultUs">The raise at a vCPU's fault exit, wall time, mean (part of the fault's latency).</param>
/// <param name="LowerPerFaultUs">The lower before KVM_RUN, wall time, mean: includes waiting for the CPU when lowering lets a higher-priority thread run first.</param>
/// <param name="LeftRealTimeToYield">Times a SCHED_FIFO thread left real time to yield while another thread installed its page.</param>
public sealed record DemandPathScheduling(
    DemandPathPolicy Destination, string Detail, DemandPathPolicy Source, double SwitchPairIdleUs, long FaultSwitches,
    double RaisePerFaultUs, double LowerPerFaultUs, long LeftRealTimeToYield)
{
    public static string Name(DemandPathPolicy p) => p == DemandPathPolicy.RealTime ? "SCHED_FIFO" : "nice";
}
