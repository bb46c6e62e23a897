namespace Faultline.Guest;

/// <summary>What one vCPU's workload ended with.</summary>
public sealed record VcpuOutcome(int Vcpu, ulong Result, IReadOnlyList<ulong> Reports, long Exits, Exception? Error)
{
    /// <summary><see cref="System.Diagnostics.Stopwatch"/> timestamps of the report() exits, one per <see cref="Reports"/> entry.</summary>
    public IReadOnlyList<long> ReportTimestamps { get; init; } = [];
    /// <summary>When the done() exit returned from KVM_RUN (0 if the workload did not finish).</summary>
    public long DoneTimestamp { get; init; }
}

/// <summary>What a whole run ended with.</summary>
public sealed record RunOutcome(IReadOnlyList<VcpuOutcome> Vcpus, TimeSpan Elapsed)
{
    /// <summary>Throws the first vCPU error, if any.</summary>
    public RunOutcome ThrowIfFailed()
    {
        foreach (var v in Vcpus) if (v.Error is not null) throw v.Error is FaultlineException ? v.Error : new GuestException($"vCPU {v.Vcpu}: {v.Error.Message}");
        return this;
    }

    public ulong TotalResult => Vcpus.Aggregate(0UL, (s, v) => s + v.Result);
}
