using Faultline.Migration.Reporting;

namespace Faultline.Migration.Source;

/// <summary>What the source did during one migration.</summary>
public sealed record SourceResult(
    ulong PagesTotal, ulong PagesDemand, ulong PagesPushed, ulong PagesZero, ulong DemandRequests, ulong DemandAlreadySent,
    long BytesSent, long BytesReceived, string SourceSha256, double PauseMs, double PauseToStateSentMs, SourcePauseStats Pause)
{
    /// <summary>CPU time of the push thread (checksums and sends of every pushed page), ms.</summary>
    public double PushCpuMs { get; init; }
    /// <summary>The push's byte-rate cap after the pause (<see cref="SourceOptions.PostcopyBandwidth"/>); 0: none.</summary>
    public long PostcopyBandwidth { get; init; }
    /// <summary>Times the destination rejoined after a lost connection; pages sent again because the lost connection had them in flight; time waited for the rejoins, ms.</summary>
    public int Rejoins { get; init; }
    public long PagesSentAgain { get; init; }
    public double RejoinWaitMs { get; init; }

    /// <summary>The source's own report: counters, the pause and how each vCPU left KVM_RUN for it.</summary>
    public string ToJson() => JsonText.Write(w =>
    {
        w.WriteStartObject();
        w.WriteNumber("pause_ms", Math.Round(PauseMs, 3));
        w.WriteNumber("pause_to_state_sent_ms", Math.Round(PauseToStateSentMs, 3));
        var p = Pause;
        w.WriteNumber("self_kick_period_us", p.SelfKickPeriodUs);
        w.WriteRounded("vcpu_stop_ms", p.VcpuStopMs);
        w.WriteStartArray("vcpu_stopped_by");
        foreach (var c in p.StoppedBy) w.WriteStringValue(CauseName(c));
        w.WriteEndArray();
        w.WriteRounded("vcpu_parked_ms", p.VcpuParkedMs);
        w.WriteNumber("pause_window_ms", Math.Round(p.WindowMs, 3));
        w.WriteRounded("self_kick_armed_ms", p.ArmedMs);
        w.WriteStartArray("self_kicks");
        foreach (var v in p.SelfKicks) w.WriteNumberValue(v);
        w.WriteEndArray();
        w.WriteNumber("self_kicks_per_second", Math.Round(p.SelfKicksPerSecond, 1));
        w.WriteNumber("push_cpu_ms", Math.Round(PushCpuMs, 1));
        w.WriteNumber("postcopy_bandwidth", PostcopyBandwidth);
        w.WriteNumber("pages_total", PagesTotal);
        w.WriteNumber("pages_demand", PagesDemand);
        w.WriteNumber("pages_pushed", PagesPushed);
        w.WriteNumber("pages_zero", PagesZero);
        w.WriteNumber("demand_requests", DemandRequests);
        w.WriteNumber("demand_already_sent", DemandAlreadySent);
        w.WriteNumber("bytes_sent", BytesSent);
        w.WriteNumber("bytes_received", BytesReceived);
        w.WriteNumber("rejoins", Rejoins);
        w.WriteNumber("pages_sent_again", PagesSentAgain);
        w.WriteNumber("rejoin_wait_ms", Math.Round(RejoinWaitMs, 1));
        w.WriteString("source_sha256", SourceSha256);
        w.WriteEndObject();
    });

    /// <summary>The JSON and report word for a stop cause: kick, self_kick, both, exit.</summary>
    public static string CauseName(VcpuStopCause c) => c switch
    {
        VcpuStopCause.Kick => "kick",
        VcpuStopCause.SelfKick => "self_kick",
        VcpuStopCause.Both => "both",
        _ => "exit",
    };
}
