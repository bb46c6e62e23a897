namespace Faultline.Paging.Engines;

/// <summary>An engine's counters, summed from per-thread counters at the end (nothing shared is written per fault but the tracker).</summary>
public sealed record PagingStats
{
    /// <summary>Pages this engine installed (each exactly once).</summary>
    public long Installed { get; init; }
    /// <summary>Faults seen by userfaultfd readers.</summary>
    public long ReaderFaults { get; init; }
    /// <summary>Reader faults on a page absent from the page cache (or from anonymous memory): UFFD_PAGEFAULT_FLAG_MINOR clear.</summary>
    public long MissingFaults { get; init; }
    /// <summary>Reader faults on a page in the page cache but not mapped in guest RAM (UFFD_PAGEFAULT_FLAG_MINOR).</summary>
    public long MinorFaults { get; init; }
    /// <summary>Reader wake-ups that found no message: another reader of the same userfaultfd had taken it (poll wakes them all).</summary>
    public long ReaderEmptyWakeups { get; init; }
    /// <summary>Faults that exited KVM_RUN and were resolved on the vCPU's own thread.</summary>
    public long ExitFaults { get; init; }
    /// <summary>Exits for pages marked in the userfault bitmap.</summary>
    public long UserfaultExits { get; init; }
    /// <summary>Fault exits turned into async page faults (the vCPU ran on; the page came later).</summary>
    public long AsyncFaults { get; init; }
    /// <summary>Faults found already resolved by another path (EEXIST, lost claims).</summary>
    public long AlreadyPresent { get; init; }
    /// <summary>Bytes allocated on fault-path threads while faults were handled.</summary>
    public long FaultPathAllocatedBytes { get; init; }
    /// <summary>The engine's own memory: trackers, bitmaps, queues.</summary>
    public long EngineMemoryBytes { get; init; }
    /// <summary>How the engine gets its exits on this host (e.g. "native KVM_MEM_USERFAULT", "emulated: SIGBUS userfaultfd").</summary>
    public string Mechanism { get; init; } = "";

    public long Faults => ReaderFaults + ExitFaults;
}
