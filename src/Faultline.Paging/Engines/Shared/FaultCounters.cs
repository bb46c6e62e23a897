namespace Faultline.Paging.Engines.Shared;

/// <summary>One thread's fault counters (a vCPU or a reader): written by that thread only, summed at the end.</summary>
internal sealed class FaultCounters
{
    public long ReaderFaults, MissingFaults, MinorFaults, ReaderEmptyWakeups, ExitFaults, UserfaultExits, AlreadyPresent, Forwarded, AsyncFaults, Alloc, AllocStart;

    public void BeginThread() => AllocStart = GC.GetAllocatedBytesForCurrentThread();
    public void EndThread() => Alloc += GC.GetAllocatedBytesForCurrentThread() - AllocStart;
}
