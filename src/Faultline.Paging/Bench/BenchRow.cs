namespace Faultline.Paging.Bench;

/// <summary>One row of `faultline bench paging`: the median of the repetitions of one configuration.</summary>
public sealed record BenchRow(
    string Mode, string Backing, string GuestMode, string Uffds, int Readers, int Vcpus, ulong MemPerVcpuMib, ulong Pages,
    double Seconds, double PagesPerSec, double AllocBytesPerFault, double EngineMemoryFraction, string Mechanism,
    IReadOnlyList<double> Samples)
{
    public double? ReferencePagesPerSec { get; init; }
    public IReadOnlyList<double> ReferenceSamples { get; init; } = [];
    public double? Ratio => ReferencePagesPerSec is { } r && r > 0 ? PagesPerSec / r : null;
    public string Mechanism { get; init; } = Mechanism;
    /// <summary>The access order: sequential, random or hotset.</summary>
    public string Workload { get; init; } = "sequential";
    /// <summary>Distinct pages the median run touched (fewer than <see cref="Pages"/> for hotset).</summary>
    public ulong PagesTouched { get; init; }
    /// <summary>Demand faults of the median run: pages its engine installed on demand, each once (0 with memory populated up front).</summary>
    public long DemandFaults { get; init; }
    /// <summary>Reader wake-ups that found no message (the median run's), per fault: the cost of several readers on one userfaultfd.</summary>
    public double EmptyWakeupsPerFault { get; init; }
    /// <summary>Table row label, as seed 002 names them.</summary>
    public string Label => $"{Mode} ({Backing}{(Uffds == "per-vcpu" ? ", per-vCPU uffds" : "")})";
}
