namespace Faultline.Paging.AsyncPf;

/// <summary>What the async-PF host did, summed over vCPUs.</summary>
public sealed record AsyncPfStats
{
    /// <summary>Faults turned into "not present" + "page ready".</summary>
    public long NotPresent { get; init; }
    public long ReadyDelivered { get; init; }
    /// <summary>Faults resolved synchronously, by why.</summary>
    public long SyncNotEnabled { get; init; }
    public long SyncInterruptsOff { get; init; }
    public long SyncKernelMode { get; init; }
    public long SyncLimit { get; init; }
    public long SyncPolicy { get; init; }
    /// <summary>arm: the SDEI event could not be dispatched (PE masked, event disabled, a handler running).</summary>
    public long SyncEventBlocked { get; init; }
    /// <summary>arm: fault exits re-entered unresolved because the control block held an unconsumed "page ready" (the access faults again after it).</summary>
    public long Retries { get; init; }
    /// <summary>Async faults whose page was present by the time it was watched (another path installed it first).</summary>
    public long PresentAtAccept { get; init; }
    /// <summary>Times a vCPU halted (the guest had nothing to run) and its thread waited for the oldest page.</summary>
    public long HaltWaits { get; init; }
    /// <summary>The notification cost the policy ended with, µs.</summary>
    public double PolicyNotifyCostUs { get; init; }
    public long SyncTotal => SyncNotEnabled + SyncInterruptsOff + SyncKernelMode + SyncLimit + SyncPolicy + SyncEventBlocked;
}
