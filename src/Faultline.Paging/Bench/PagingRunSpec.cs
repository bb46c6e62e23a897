using Faultline.Guest;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Bench;

/// <summary>One measured run: an engine, a VM shape, a workload.</summary>
public sealed record PagingRunSpec(PagingOptions Options, int Vcpus, ulong MemPerVcpu, PrivilegeLevel Level = PrivilegeLevel.User)
{
    /// <summary>Write (demand_paging_test's default: one qword per page), Read, or Verify (the guest checks the source's bytes).</summary>
    public Workload Workload { get; init; } = Workload.Write;
    public AccessOrder Order { get; init; } = AccessOrder.Sequential;
    public int QwordsPerPage { get; init; } = 1;
    public ulong SourceSeed { get; init; } = 0x1000_0000_0000;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>What a run measured and checked.</summary>
public sealed record PagingRunResult(PagingRunSpec Spec, ulong Pages, double Seconds, PagingStats Stats, ulong GuestResult, long HostMismatches)
{
    /// <summary>Distinct pages the guest touched (host twin of its order): all of them unless the order is hotset.</summary>
    public ulong PagesTouched { get; init; } = Pages;
    /// <summary>Pages demand-paged in per second: touched pages over the run's time.</summary>
    public double PagesPerSecond => PagesTouched / Seconds;
    public double AllocBytesPerFault => Stats.Faults == 0 ? 0 : (double)Stats.FaultPathAllocatedBytes / Stats.Faults;
}
