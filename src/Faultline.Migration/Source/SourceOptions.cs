namespace Faultline.Migration.Source;

/// <summary>The source: a guest of <see cref="Vcpus"/> vCPUs and <see cref="RamBytes"/> of anonymous RAM running the generation workload.</summary>
public sealed record SourceOptions(int Vcpus, ulong RamBytes) : MigrationOptions
{
    /// <summary>Qwords the workload writes (and later verifies) per page: 512 covers every byte.</summary>
    public int QwordsPerPage { get; init; } = 512;
    /// <summary>The order the guest's generation passes visit pages in (sequential, random, hotset).</summary>
    public Faultline.Guest.AccessOrder Order { get; init; } = Faultline.Guest.AccessOrder.Sequential;
    /// <summary>Run the mixed workload (the task kernel; <see cref="Order"/>, <see cref="QwordsPerPage"/> and <see cref="WriteFraction"/> do not apply) instead of the generation program.</summary>
    public MixedWorkload? Mixed { get; init; }
    /// <summary>Part of each vCPU's range the guest writes; the rest stays zero (and travels as zero-page markers).</summary>
    public double WriteFraction { get; init; } = 1.0;
    /// <summary>Whole passes every vCPU completes before a destination is accepted (1: every written page holds data).</summary>
    public int PassesBeforeMigration { get; init; } = 1;
    /// <summary>Pages the push sends right after each demanded page before it may jump again (QEMU continues from the requested page).</summary>
    public int PrefetchWindowPages { get; init; } = 64;
    /// <summary>Most pages per push frame: consecutive non-zero pages travel as one PageRun (installed with one ioctl); 1 sends a frame per page.</summary>
    public int PushRunPages { get; init; } = Protocol.Wire.MaxRunPages;
    /// <summary>
    /// The most bytes per second the background push sends after the pause (QEMU's max-postcopy-bandwidth); 0: as fast
    /// as the link and the CPUs allow. Demand replies are never held back. On a host whose cores the guest shares with
    /// the transfer, a cap leaves CPU time to the vCPUs: fewer preempted faults, a longer post-copy (docs/migration.md).
    /// </summary>
    public long PostcopyBandwidth { get; init; }
    /// <summary>Test seam: the push starts here instead of page 0 (e.g. at the pages the guest touches first, to force push/demand races).</summary>
    public ulong PushStartPage { get; init; }
    /// <summary>Test seam: the push starts at the page vCPU 0 was working on when it paused, the very page it faults on first after resuming (forces the push/demand race).</summary>
    public bool PushFromResumePoint { get; init; }
    /// <summary>
    /// While a pause is imminent (Layout sent → pause), each vCPU thread arms a timer of its own that kicks it out of
    /// KVM_RUN this often, so the pause does not wait for a cross-CPU kick's host-tick tail. Zero: no timer, only the kick.
    /// </summary>
    public TimeSpan SelfKickPeriod { get; init; } = DefaultSelfKickPeriod;
    /// <summary>Guest RAM in transparent huge pages (the host's THP permitting); off: 4 KiB pages, as before (A/B: FAULTLINE_SOURCE_THP=0).</summary>
    public bool HugePages { get; init; } = true;
    /// <summary>
    /// The default <see cref="SelfKickPeriod"/>: 500 µs. Measured here (docs/migration.md, "The pause"): 250, 500 and 1000 µs
    /// all cut the pause's median from ~1.2 ms to ~0.4 ms; 1000 µs left a 4.5 ms tail in 18 runs, and each timer exit
    /// costs a spinning guest ~40 µs (250 µs: −17% guest throughput while armed, 500 µs: −8%, 1000 µs: −3%).
    /// </summary>
    public static readonly TimeSpan DefaultSelfKickPeriod = TimeSpan.FromMicroseconds(500);
    /// <summary>
    /// How long an accepted connection may take to send its Hello before it is refused as a stray peer (a destination
    /// sends it at once), so that a silent one holds the door only this long.
    /// </summary>
    public TimeSpan PeerHelloTimeout { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>
    /// After the pause, how long a lost connection waits for its destination to rejoin the session (it keeps the guest's
    /// pages and refuses any other destination meanwhile); zero: a lost connection ends the session. Longer than the
    /// destination's <see cref="Destination.DestinationOptions.RecoverTimeout"/>, so a destination gives up (and stops its
    /// VM) before the source would take another.
    /// </summary>
    public TimeSpan RejoinTimeout { get; init; } = DefaultRejoinTimeout;
    public static readonly TimeSpan DefaultRejoinTimeout = TimeSpan.FromSeconds(60);
    /// <summary>How long to wait for a destination to connect (null: forever).</summary>
    public TimeSpan? AcceptTimeout { get; init; } = TimeSpan.FromSeconds(60);
}
