using Faultline.Kvm.Memory;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Destination;

/// <summary>The receiving end: where the source listens, the paging engine and backing to resume the guest with, and what layout to accept.</summary>
public sealed record DestinationOptions(MigrationAddress Source, PagingMode Engine = PagingMode.Exits, Backing Backing = Backing.Anonymous) : MigrationOptions
{
    /// <summary>If set, a source with another vCPU count is refused before it pauses.</summary>
    public int? ExpectVcpus { get; init; }
    /// <summary>If set, a source with another RAM size is refused before it pauses.</summary>
    public ulong? ExpectRamBytes { get; init; }
    /// <summary>The most guest RAM this destination will map; a larger guest is refused before the source pauses.</summary>
    public ulong? MaxRamBytes { get; init; }
    /// <summary>How long the guest may take on the destination to finish its interrupted pass and the verification pass.</summary>
    public TimeSpan GuestTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>
    /// Told the guest's shape (<see cref="ExpectVcpus"/> and <see cref="ExpectRamBytes"/>), the destination builds its
    /// VM, memory, engine and vCPU threads before it connects, as QEMU's destination does when started with
    /// <c>-incoming</c>: the migration then only checks the layout. Otherwise it builds after the source's layout.
    /// </summary>
    public bool Prepared => ExpectVcpus is not null && ExpectRamBytes is not null;
    /// <summary>Ping/Pong round trips on the urgent channel before the pause (the report's link_rtt_us), 1 … 10 000.</summary>
    public int RttProbes { get; init; } = 50;
    /// <summary>
    /// The vCPU threads' nice value from their resume until every page is present (then 0). One value for the whole
    /// post-copy: no priority change per fault. A guest below the transfer faults less (the push runs ahead of it).
    /// </summary>
    public int VcpuPostcopyNice { get; init; } = DefaultVcpuPostcopyNice;
    public const int DefaultVcpuPostcopyNice = 0;
    /// <summary>Why this engine (the selector's reason for --engine auto), for the report.</summary>
    public string EngineReason { get; init; } = "";
    /// <summary>
    /// Where the source is, asked once the destination is prepared and about to connect (it may wait, e.g. for a source
    /// process that is still starting): the two ends start up side by side. Null: <see cref="Source"/>.
    /// </summary>
    public Func<MigrationAddress>? ResolveSource { get; init; }
    /// <summary>The guest's workload order, for the report (the source runs it; the wire carries only registers).</summary>
    public string Workload { get; init; } = "sequential";
    /// <summary>The mixed workload the source runs (the task kernel); null: the generation program. Checked against the source's layout.</summary>
    public MixedWorkload? Mixed { get; init; }
    /// <summary>Async page faults for a guest that enables them (the mixed workload): policy and limits. Never: every fault waits.</summary>
    public AsyncPfOptions AsyncPf { get; init; } = new();
    /// <summary>
    /// In post-copy, how long a lost connection is tried again (with backoff) before the destination gives up, stops
    /// the guest and reports that it could not be completed; the guest keeps running meanwhile. Zero: a lost connection
    /// fails the migration at once. Keep it shorter than the source's <see cref="Source.SourceOptions.RejoinTimeout"/>.
    /// </summary>
    public TimeSpan RecoverTimeout { get; init; } = DefaultRecoverTimeout;
    public static readonly TimeSpan DefaultRecoverTimeout = TimeSpan.FromSeconds(30);
    /// <summary>The most rejoins one migration makes; a link lost more often is not fit to carry a guest.</summary>
    public int MaxRejoins { get; init; } = 16;
    /// <summary>Where to cut the link on purpose (fault injection: <c>--inject</c>); empty: nowhere.</summary>
    public InjectionPlan Inject { get; init; } = InjectionPlan.None;
    /// <summary>How a <see cref="InjectionKind.KillSource"/> injection kills the source (where it is this process's child); null: such a plan is refused.</summary>
    public Action? KillSource { get; init; }
    /// <summary>
    /// How a <see cref="InjectionKind.KillDestination"/> injection kills this destination: the process it runs in dies
    /// (SIGKILL, nothing unwinds), as a crashed host would; the action does not return. Null: such a plan is refused.
    /// </summary>
    public Action? KillDestination { get; init; }
    /// <summary>How the link is described in the report ("loopback", "veth", "unix").</summary>
    public string LinkKind { get; init; } = "loopback";
}
