namespace Faultline.Migration.Reporting;

/// <summary>How one migration scheduled its demand path (<see cref="ThreadPriority"/>): one priority per thread for the whole post-copy, none changed per fault.</summary>
/// <param name="Destination">The destination's policy for the threads that carry demands and pages (after any fallback at run time).</param>
/// <param name="Detail">The destination's policy in words, or why SCHED_FIFO was not used.</param>
/// <param name="Source">The source's policy, from its summary.</param>
/// <param name="VcpuPostcopyNice">The destination vCPUs' nice value until every page was present.</param>
public sealed record DemandPathScheduling(DemandPathPolicy Destination, string Detail, DemandPathPolicy Source, int VcpuPostcopyNice)
{
    public static string Name(DemandPathPolicy p) => p == DemandPathPolicy.RealTime ? "SCHED_FIFO" : "nice";
}
