using Faultline.Migration.Reporting;
using Faultline.Paging;

namespace Faultline.Snapshot;

/// <summary>What one restore did and how long each part took (ms from the command's start).</summary>
public sealed record RestoreReport
{
    public required string Directory { get; init; }
    public required PagingMode Engine { get; init; }
    /// <summary>Why this engine: the selector's reason under auto, or that it was asked for.</summary>
    public string EngineReason { get; init; } = "";
    public required string Mechanism { get; init; }
    public required int Vcpus { get; init; }
    public required ulong RamBytes { get; init; }
    public required ulong Pages { get; init; }
    public required ulong DataPages { get; init; }
    /// <summary>Command start → the first vCPU entering KVM_RUN with its restored state.</summary>
    public required double FirstInstructionMs { get; init; }
    /// <summary>Where the time to the first instruction went (ms from the command's start).</summary>
    public RestoreStartup? Startup { get; init; }
    /// <summary>Command start → every page present (0: the fill was off and the guest did not touch everything).</summary>
    public required double ResidentMs { get; init; }
    /// <summary>Command start → every vCPU finished its check.</summary>
    public required double GuestDoneMs { get; init; }
    /// <summary>Command start → the replayed working set all present (0: no replay).</summary>
    public double WorkingSetMs { get; init; }
    /// <summary>Pages read from the file for a fault.</summary>
    public required long PagesDemand { get; init; }
    /// <summary>Holes installed for a fault, without reading.</summary>
    public required long PagesDemandZero { get; init; }
    /// <summary>Data pages the background fill read and installed before any fault asked.</summary>
    public required long PagesPrefetched { get; init; }
    /// <summary>Zero pages of the snapshot (holes), however they were installed.</summary>
    public required long PagesZero { get; init; }
    public long WorkingSetPages { get; init; }
    public long FaultsAvoidedByReplay { get; init; }
    public bool Replayed { get; init; }
    public bool Recorded { get; init; }
    public required LatencySummary FaultLatency { get; init; }
    /// <summary>Where fault latency is measured: "vcpu" (KVM_RUN returned → installed, exit engines) or "source" (request → installed, reader engines).</summary>
    public required string FaultLatencyAt { get; init; }
    public required ulong GuestMismatches { get; init; }
    public int FillGrows { get; init; }
    public int FillShrinks { get; init; }
    public int FillLargestChunk { get; init; }
    public long FaultPathAllocatedBytes { get; init; }
    /// <summary>The vCPU threads' time asleep in the kernel while they ran the guest, summed (waiting for pages), ms.</summary>
    public double VcpuSleptMs { get; init; }
    /// <summary>Page handlers started because the one serving died (<c>--handler</c> restores; null for the others).</summary>
    public int? HandlerRestarts { get; init; }

    public long PagesDemandTotal => PagesDemand + PagesDemandZero;
    /// <summary>Fill rate while it ran (pages/s × 4 KiB), from the first instruction to resident.</summary>
    public double FillGiBPerSecond => ResidentMs > FirstInstructionMs ? RamBytes / 1073741824.0 / ((ResidentMs - FirstInstructionMs) / 1000) : 0;
}

/// <summary>
/// The steps before a restore's first instruction, each in ms from the command's start: the manifest read (the VM's
/// creation starts then, beside the other checks), the snapshot checked (index, vCPU state, the kept guest image), the
/// guest image ready (kept with the snapshot: read with the checks; otherwise assembled beside the VM's creation), the
/// VM built (memory, vCPUs, image written), the engine chosen (beside the checks) and started (userfaultfd or exits
/// armed, readers running).
/// </summary>
public sealed record RestoreStartup(double CheckedMs, double ImageReadyMs, bool ImageLoaded, double VmBuiltMs, double EngineStartedMs)
{
    public double ManifestMs { get; init; }
    public double EngineChosenMs { get; init; }
}
