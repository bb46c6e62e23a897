using Faultline.Paging;

namespace Faultline.Snapshot;

/// <summary>How <c>snapshot restore</c> runs. <paramref name="Engine"/>: a paging engine, checked against this host, or null: the selector's pick (auto).</summary>
public sealed record RestoreOptions(PagingMode? Engine)
{
    /// <summary>Make every page resident in the background while the guest runs.</summary>
    public bool Fill { get; init; } = true;
    /// <summary>Prefetch the recorded working set first, if the snapshot has one.</summary>
    public bool Replay { get; init; } = true;
    /// <summary>Record this restore's first touches beside the snapshot when it has no recording yet.</summary>
    public bool Record { get; init; } = true;
    /// <summary>When the command started (Stopwatch ticks): first_instruction_ms counts from here. 0: when Restore is called.</summary>
    public long StartTimestamp { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary><c>--handler</c> restores: how long one vCPU may wait for one page before the handler counts as stalled.</summary>
    public TimeSpan HandlerTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Tests: looks at the restored machine (its RAM) after a clean run, before teardown.</summary>
    internal Action<Faultline.Guest.GuestMachine>? Inspect { get; init; }
    /// <summary>Tests: runs on the restoring thread after the manifest is read, before the other files are checked (the VM is built meanwhile).</summary>
    internal Action? BeforeChecks { get; init; }
    /// <summary>Tests: runs on the thread that builds the VM once the VM, its memory and its vCPUs exist, before it waits for the guest image (the checks may not have ended).</summary>
    internal Action? VmCreated { get; init; }
}
