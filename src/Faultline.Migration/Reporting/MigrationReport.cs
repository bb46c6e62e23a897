using Faultline.Paging.Engines;
using System.Text;
using System.Text.Json;

namespace Faultline.Migration.Reporting;

/// <summary>What one migration did and measured. <see cref="ToJson"/> writes the report's keys.</summary>
public sealed record MigrationReport
{
    public required string Engine { get; init; }
    public required string EngineMechanism { get; init; }
    /// <summary>Why this engine ran (the selector's reason for --engine auto).</summary>
    public string EngineReason { get; init; } = "";
    public string Workload { get; init; } = "sequential";
    public required int Vcpus { get; init; }
    public required ulong RamBytes { get; init; }
    /// <summary>Source pauses its vCPUs → the last destination vCPU re-enters KVM_RUN (one host clock: CLOCK_MONOTONIC).</summary>
    public required double DowntimeMs { get; init; }
    /// <summary>Destination connects (migration starts) → every page present on the destination.</summary>
    public required double TotalMs { get; init; }
    /// <summary>Source pauses → every page present on the destination (the post-copy phase, downtime included).</summary>
    public required double PostcopyMs { get; init; }
    /// <summary>Destination connects → the source pauses (handshake, layout check, and the VM build unless prepared).</summary>
    public required double SetupMs { get; init; }
    /// <summary>A prepared destination (told the guest's shape): building its VM, memory and threads before it connected; null if it built after the layout.</summary>
    public double? PrepareMs { get; init; }
    /// <summary>Source pauses → the last destination vCPU finished its verification pass (the guest's own view of the migration's cost).</summary>
    public double GuestFinishedMs { get; init; }
    public required ulong PagesTotal { get; init; }
    public required long PagesDemand { get; init; }
    public required long PagesPushed { get; init; }
    public required long PagesZero { get; init; }
    public required long PagesDuplicate { get; init; }
    /// <summary>Page frames that failed their checksum and were dropped, and the pages demanded again because of them.</summary>
    public long FramesDamaged { get; init; }
    public long PagesRerequested { get; init; }
    /// <summary>Pages the destination's fault paths asked for (each page at most once per connection).</summary>
    public required long DemandRequests { get; init; }
    /// <summary>Demand frames those requests went out in (one frame carries every page queued when it leaves).</summary>
    public long DemandFrames { get; init; }
    /// <summary>Requested pages whose first copy arrived and was installed for the waiting fault path (demand reply or push, whichever came first).</summary>
    public required long PagesToWaiters { get; init; }
    public required long DemandAlreadyPushed { get; init; }
    /// <summary>PageRun frames received (consecutive pushed pages installed with one ioctl per run).</summary>
    public long PushRuns { get; init; }
    /// <summary>Requested pages whose first copy arrived in a push run, not a demand reply (the push/demand race on the run path).</summary>
    public long RunPagesToFaultPath { get; init; }
    /// <summary>How long a fault path spun for its page before blocking, µs (sized from the link's round trip).</summary>
    public double WaitSpinUs { get; init; }
    /// <summary>CPU time of the main channel's receiver thread (the bulk receive path: socket, checksums, install), ms.</summary>
    public double BulkReceiverCpuMs { get; init; }
    public required long BytesOnWire { get; init; }
    public required LatencySummary FaultLatencyUs { get; init; }
    /// <summary>Per demanded page, every engine: requested → installed (the receiver's view of the demand path).</summary>
    public LatencySummary? DemandLatencyUs { get; init; }
    /// <summary>Exit engines: per fault whose page was installed while its vCPU waited, installed → vCPU back (the wake-up and the wait for a CPU).</summary>
    public LatencySummary? WakeLatencyUs { get; init; }
    /// <summary>
    /// Faults that took at least the page tracker's timed wait (<see cref="WaitTimerMs"/>): only such a wait can have
    /// ended by its timer instead of a wake-up (0: none did). An upper bound, not a count of expiries.
    /// </summary>
    public long FaultWaitsPastWaitTimer { get; init; }
    /// <summary>The longest a fault path's wait on the page tracker sleeps before it looks again (PageTracker.WaitPresent).</summary>
    public const double WaitTimerMs = PageTracker.WaitTimerMs;
    /// <summary>Fault-path sleeps on the page tracker that ran out instead of being woken (PageTracker.WaitTimerExpiries; exit engines).</summary>
    public long WaitTimerExpiries { get; init; }
    /// <summary>Of those, the ones after which the page was there: a wake-up that did not arrive. Should be 0.</summary>
    public long WaitsEndedByTimer { get; init; }
    /// <summary>How fault latency was taken for this engine.</summary>
    public required string FaultLatencyMeasure { get; init; }
    public required double[] VcpuBlockedMs { get; init; }
    /// <summary>
    /// Per vCPU thread, during post-copy (resume → every page present): time runnable but waiting for a CPU
    /// (schedstat run_delay, the difference of two reads), ms. Read it at the scale of a whole run: over post-copies of
    /// a few ms the difference was seen to go back by up to 5 ms on this host (not understood).
    /// </summary>
    public double[] VcpuRunQueueMs { get; init; } = [];
    public required string SourceSha256 { get; init; }
    public required string ReceivedSha256 { get; init; }
    public required ulong GuestMismatches { get; init; }
    public required long EngineInstalled { get; init; }
    public required long InstalledByReceiver { get; init; }
    public required string Link { get; init; }
    /// <summary>Peer authentication and encryption of the connections: "none", "psk (HMAC-SHA256)", "TLS 1.3 TLS_AES_128_GCM_SHA256 + psk (HMAC-SHA256)".</summary>
    public string Security { get; init; } = "none";
    public required double LinkDelayUs { get; init; }
    public required bool LinkDelayEmulated { get; init; }

    /// <summary>The link's round trip: Ping/Pong on the urgent channel (delay line included) before the pause.</summary>
    public required LatencySummary LinkRttUs { get; init; }
    /// <summary>How the demand path was scheduled on both ends, and the per-fault cost of switching to it.</summary>
    public required DemandPathScheduling Scheduling { get; init; }

    /// <summary>The fault-latency target: the link's round trip (p50) + 30 µs.</summary>
    public double FaultLatencyTargetUs => LinkRttUs.P50 + 30;
    public bool FaultLatencyTargetMet => FaultLatencyUs.P50 <= FaultLatencyTargetUs;

    /// <summary>The mixed workload's CPU-task progress and async page faults (null: the generation program).</summary>
    public MixedReport? Mixed { get; init; }

    /// <summary>The user's wall time and its parts, when the CLI measured them around a local migration.</summary>
    public WallTime? Wall { get; init; }

    /// <summary>Optional baseline: a plain loopback socket streaming the guest's RAM size, one thread to another (the median of <see cref="RawStreamSamplesMs"/>).</summary>
    public double? RawStreamMs { get; init; }
    /// <summary>Every baseline stream measured (this host's stream time swings 2x from one run to the next).</summary>
    public double[] RawStreamSamplesMs { get; init; } = [];

    /// <summary>Optional: the source's own JSON report (<c>SourceResult.ToJson</c>), when the source ran as our child.</summary>
    public string? SourceJson { get; init; }

    public bool DigestsMatch => SourceSha256 == ReceivedSha256;
    /// <summary>Each time the link was lost in post-copy and rejoined, in order.</summary>
    public RejoinRecord[] Rejoins { get; init; } = [];
    /// <summary>The fault-injection plan this run rehearsed (<c>--inject</c>), if any.</summary>
    public string? Injected { get; init; }

    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("downtime_ms", Math.Round(DowntimeMs, 3));
            w.WriteNumber("total_ms", Math.Round(TotalMs, 3));
            w.WriteNumber("postcopy_ms", Math.Round(PostcopyMs, 3));
            w.WriteNumber("setup_ms", Math.Round(SetupMs, 3));
            if (Wall is { } wall)
            {
                w.WriteNumber("wall_ms", Math.Round(wall.TotalMs, 1));
                w.WriteStartObject("wall_parts_ms");
                w.WriteNumber("startup", Math.Round(wall.StartupMs, 1));
                w.WriteNumber("connect_and_handover", Math.Round(wall.ConnectAndHandOverMs, 1));
                w.WriteNumber("postcopy", Math.Round(wall.PostcopyMs, 1));
                w.WriteNumber("rest", Math.Round(wall.RestMs, 1));
                w.WriteEndObject();
                w.WriteNumber("startup_prepare_ms", Math.Round(wall.PrepareMs, 1));   // inside the start-up, beside the source's start
            }
            if (PrepareMs is { } prep) w.WriteNumber("prepare_ms", Math.Round(prep, 3));
            w.WriteNumber("guest_finished_ms", Math.Round(GuestFinishedMs, 3));
            w.WriteNumber("pages_total", PagesTotal);
            w.WriteNumber("pages_demand", PagesDemand);
            w.WriteNumber("pages_pushed", PagesPushed);
            w.WriteNumber("pages_zero", PagesZero);
            w.WriteNumber("pages_duplicate", PagesDuplicate);
            w.WriteNumber("frames_damaged", FramesDamaged);
            w.WriteNumber("pages_rerequested", PagesRerequested);
            w.WriteNumber("reconnects", Rejoins.Length);
            w.WriteNumber("recovery_ms", Math.Round(Rejoins.Sum(r => r.RecoveryMs), 3));
            if (Injected is { } inj) w.WriteString("injected", inj);
            if (Rejoins.Length > 0)
            {
                w.WriteStartArray("rejoins");
                foreach (var r in Rejoins)
                {
                    w.WriteStartObject();
                    w.WriteString("cause", r.Cause);
                    w.WriteNumber("recovery_ms", Math.Round(r.RecoveryMs, 3));
                    w.WriteNumber("attempts", r.Attempts);
                    w.WriteNumber("pages_asked_again", r.PagesAskedAgain);
                    w.WriteNumber("pages_sent_again", r.PagesSentAgain);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteNumber("demand_requests", DemandRequests);
            w.WriteNumber("demand_frames", DemandFrames);
            w.WriteNumber("pages_to_waiters", PagesToWaiters);
            w.WriteNumber("demand_already_pushed", DemandAlreadyPushed);
            w.WriteNumber("push_runs", PushRuns);
            w.WriteNumber("run_pages_to_fault_path", RunPagesToFaultPath);
            w.WriteNumber("bulk_receiver_cpu_ms", Math.Round(BulkReceiverCpuMs, 1));
            w.WriteNumber("bytes_on_wire", BytesOnWire);
            WriteLatency(w, "fault_latency_us", FaultLatencyUs, FaultLatencyMeasure, withMean: true);
            if (DemandLatencyUs is { } d) WriteLatency(w, "demand_latency_us", d, "receiver: page requested by a fault path → page installed");
            if (WakeLatencyUs is { } wake) WriteLatency(w, "wake_latency_us", wake, "vCPU thread: its page installed during the wait → vCPU about to re-enter");
            w.WriteNumber("fault_waits_past_wait_timer", FaultWaitsPastWaitTimer);
            w.WriteNumber("wait_timer_ms", WaitTimerMs);
            w.WriteNumber("wait_timer_expiries", WaitTimerExpiries);
            w.WriteNumber("waits_ended_by_timer", WaitsEndedByTimer);
            w.WriteStartObject("link_rtt_us");
            w.WriteNumber("p50", Math.Round(LinkRttUs.P50, 1));
            w.WriteNumber("min", Math.Round(LinkRttUs.Min, 1));
            w.WriteNumber("p90", Math.Round(LinkRttUs.P90, 1));
            w.WriteNumber("count", LinkRttUs.Count);
            w.WriteString("measured", "Ping → Pong on the urgent channel before the pause, delay line included, both threads on the demand path");
            w.WriteEndObject();
            w.WriteNumber("fault_latency_target_us", Math.Round(FaultLatencyTargetUs, 1));
            w.WriteBoolean("fault_latency_target_met", FaultLatencyTargetMet);
            w.WriteNumber("wait_spin_us", Math.Round(WaitSpinUs, 1));
            w.WriteStartObject("demand_path_scheduling");
            w.WriteString("destination", DemandPathScheduling.Name(Scheduling.Destination));
            w.WriteString("source", DemandPathScheduling.Name(Scheduling.Source));
            w.WriteString("detail", Scheduling.Detail);
            w.WriteNumber("vcpu_postcopy_nice", Scheduling.VcpuPostcopyNice);
            w.WriteEndObject();
            w.WriteStartArray("vcpu_blocked_ms");
            foreach (var b in VcpuBlockedMs) w.WriteNumberValue(Math.Round(b, 3));
            w.WriteEndArray();
            w.WriteStartArray("vcpu_runqueue_ms");
            foreach (var b in VcpuRunQueueMs) w.WriteNumberValue(Math.Round(b, 3));
            w.WriteEndArray();
            w.WriteString("source_sha256", SourceSha256);
            w.WriteString("received_sha256", ReceivedSha256);
            w.WriteBoolean("digests_match", DigestsMatch);
            w.WriteNumber("guest_mismatches", GuestMismatches);
            Mixed?.Write(w);
            w.WriteStartObject("link");
            w.WriteString("kind", Link);
            w.WriteNumber("delay_us", LinkDelayUs);
            w.WriteBoolean("delay_emulated", LinkDelayEmulated);
            w.WriteString("security", Security);
            w.WriteEndObject();
            if (RawStreamMs is { } raw)
            {
                w.WriteNumber("raw_stream_ms", Math.Round(raw, 3));
                w.WriteStartArray("raw_stream_samples_ms");
                foreach (var r in RawStreamSamplesMs) w.WriteNumberValue(Math.Round(r, 3));
                w.WriteEndArray();
                w.WriteNumber("total_over_raw", Math.Round(TotalMs / raw, 3));
                w.WriteNumber("postcopy_over_raw", Math.Round(PostcopyMs / raw, 3));
            }
            if (SourceJson is { } source)
            {
                w.WritePropertyName("source");
                w.WriteRawValue(source);
            }
            w.WriteString("engine", Engine);
            w.WriteString("engine_mechanism", EngineMechanism);
            w.WriteString("engine_reason", EngineReason);
            w.WriteString("workload", Workload);
            w.WriteNumber("engine_installed", EngineInstalled);
            w.WriteNumber("installed_by_receiver", InstalledByReceiver);
            w.WriteNumber("vcpus", Vcpus);
            w.WriteNumber("ram_bytes", RamBytes);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>One latency object of the report: p50/p90/p99/max (and the mean), count, how it was measured, the histogram.</summary>
    private static void WriteLatency(Utf8JsonWriter w, string name, LatencySummary l, string measured, bool withMean = false)
    {
        w.WriteStartObject(name);
        w.WriteNumber("p50", Math.Round(l.P50, 1));
        w.WriteNumber("p90", Math.Round(l.P90, 1));
        w.WriteNumber("p99", Math.Round(l.P99, 1));
        w.WriteNumber("max", Math.Round(l.Max, 1));
        if (withMean) w.WriteNumber("mean", Math.Round(l.Mean, 1));
        w.WriteNumber("count", l.Count);
        w.WriteString("measured", measured);
        WriteHistogram(w, l);
        w.WriteEndObject();
    }

    /// <summary>
    /// fault_latency_us.histogram as QEMU 10.1's postcopy-latency-dist: bucket i counts samples of [2^i, 2^(i+1)) µs
    /// (bucket 0: under 2 µs), up to the highest non-empty bucket.
    /// </summary>
    private static void WriteHistogram(Utf8JsonWriter w, LatencySummary l)
    {
        w.WriteStartArray("histogram");
        foreach (var c in l.Histogram) w.WriteNumberValue(c);
        w.WriteEndArray();
    }
}
