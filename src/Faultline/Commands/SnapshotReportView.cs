using System.Globalization;
using System.Text.Json;
using Faultline.Migration.Reporting;
using Faultline.Paging;
using Faultline.Snapshot;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>The snapshot commands' reports: a table for people, JSON for scripts (field names as issue 13 lists them).</summary>
internal static class SnapshotReportView
{
    public static string Json(SaveResult r, string dir) => JsonOutput.Text(w =>
    {
        var m = r.Manifest;
        w.WriteStartObject();
        w.WriteString("snapshot", dir);
        w.WriteNumber("format_version", m.FormatVersion);
        w.WriteNumber("vcpus", m.Vcpus);
        w.WriteNumber("mem_bytes", m.RamBytes);
        w.WriteString("workload", m.Order.ToString().ToLowerInvariant());
        w.WriteNumber("passes_before_pause", m.PassesBeforePause);
        w.WriteNumber("pages", m.Pages);
        w.WriteNumber("data_pages", m.DataPages);
        w.WriteNumber("zero_pages", m.Pages - m.DataPages);
        w.WriteNumber("bytes_written", r.BytesWritten);
        w.WriteRounded("run_ms", r.RunTime.TotalMilliseconds, 1);
        w.WriteRounded("write_ms", r.WriteTime.TotalMilliseconds, 1);
        w.WriteRounded("write_mib_per_second", r.WriteMiBPerSecond, 0);
        w.WriteEndObject();
    });

    public static void Render(SaveResult r, string dir, IAnsiConsole console)
    {
        var m = r.Manifest;
        console.MarkupLine($"[bold]snapshot save[/]: {m.Vcpus} vCPU(s), {ValueParsers.FormatSize(m.RamBytes)}, {m.Order.ToString().ToLowerInvariant()} generation program paused after {m.PassesBeforePause} pass(es) → {Markup.Escape(dir)}");
        var t = new Table().AddColumns("Pages", "Data", "Zero (holes)", "Written", "Write time", "MiB/s");
        t.AddRow(Output.Count(m.Pages), Output.Count(m.DataPages), Output.Count(m.Pages - m.DataPages), ValueParsers.FormatSize((ulong)r.BytesWritten),
            Ms(r.WriteTime.TotalMilliseconds), Output.Count(r.WriteMiBPerSecond));
        console.Write(t);
    }

    public static string Json(RestoreReport r, string why, RestoreReport? eager, ManyRestoresResult? many) => JsonOutput.Text(w =>
    {
        w.WriteStartObject();
        w.WriteString("snapshot", r.Directory);
        w.WriteString("engine", r.Engine.Name());
        w.WriteString("engine_reason", why);
        w.WriteString("mechanism", r.Mechanism);
        w.WriteNumber("vcpus", r.Vcpus);
        w.WriteNumber("mem_bytes", r.RamBytes);
        w.WriteNumber("pages", r.Pages);
        w.WriteNumber("data_pages", r.DataPages);
        w.WriteRounded("first_instruction_ms", r.FirstInstructionMs);
        if (r.Startup is { } st)
        {
            w.WriteStartObject("startup_ms");
            w.WriteRounded("manifest", st.ManifestMs);
            w.WriteRounded("checked", st.CheckedMs);
            w.WriteRounded("image_ready", st.ImageReadyMs);
            w.WriteBoolean("image_loaded", st.ImageLoaded);
            w.WriteRounded("vm_built", st.VmBuiltMs);
            w.WriteRounded("engine_chosen", st.EngineChosenMs);
            w.WriteRounded("engine_started", st.EngineStartedMs);
            w.WriteEndObject();
        }
        w.WriteRounded("resident_ms", r.ResidentMs);
        w.WriteRounded("guest_done_ms", r.GuestDoneMs);
        w.WriteRounded("working_set_ms", r.WorkingSetMs);
        w.WriteNumber("pages_demand", r.PagesDemand);
        w.WriteNumber("pages_demand_zero", r.PagesDemandZero);
        w.WriteNumber("pages_prefetched", r.PagesPrefetched);
        w.WriteNumber("pages_zero", r.PagesZero);
        w.WriteBoolean("replayed", r.Replayed);
        w.WriteBoolean("recorded", r.Recorded);
        w.WriteNumber("working_set_pages", r.WorkingSetPages);
        w.WriteNumber("faults_avoided_by_replay", r.FaultsAvoidedByReplay);
        w.WriteStartObject("fault_latency_us");
        w.WriteString("measured_at", r.FaultLatencyAt);
        Latency(w, r.FaultLatency);
        w.WriteEndObject();
        w.WriteNumber("guest_mismatches", r.GuestMismatches);
        w.WriteStartObject("fill");
        w.WriteRounded("gib_per_second", r.FillGiBPerSecond, 2);
        w.WriteNumber("chunk_grows", r.FillGrows);
        w.WriteNumber("chunk_shrinks", r.FillShrinks);
        w.WriteNumber("largest_chunk_pages", r.FillLargestChunk);
        w.WriteEndObject();
        w.WriteNumber("fault_path_allocated_bytes", r.FaultPathAllocatedBytes);
        w.WriteRounded("vcpu_slept_ms", r.VcpuSleptMs);
        if (r.HandlerRestarts is { } restarts) w.WriteNumber("handler_restarts", restarts);
        if (eager is not null)
        {
            w.WriteRounded("eager_first_instruction_ms", eager.FirstInstructionMs);
            w.WriteRounded("eager_guest_done_ms", eager.GuestDoneMs);
            w.WriteNumber("eager_guest_mismatches", eager.GuestMismatches);
        }
        if (many is not null)
        {
            w.WriteStartObject("concurrent");
            w.WriteNumber("count", many.Restores.Count);
            w.WriteRounded("all_done_ms", many.WallMs);
            w.WriteRounded("ratio_to_one", r.GuestDoneMs > 0 ? many.WallMs / Math.Max(r.GuestDoneMs, r.ResidentMs) : 0, 2);
            w.WriteStartArray("restores");
            foreach (var c in many.Restores)
            {
                w.WriteStartObject();
                w.WriteRounded("first_instruction_ms", c.FirstInstructionMs);
                w.WriteRounded("resident_ms", c.ResidentMs);
                w.WriteRounded("guest_done_ms", c.GuestDoneMs);
                w.WriteNumber("pages_demand", c.PagesDemand);
                w.WriteRounded("fault_p50_us", c.FaultLatency.P50, 1);
                w.WriteRounded("fault_p99_us", c.FaultLatency.P99, 1);
                w.WriteNumber("guest_mismatches", c.GuestMismatches);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndObject();
    });

    private static void Latency(Utf8JsonWriter w, LatencySummary s)
    {
        w.WriteNumber("count", s.Count);
        w.WriteRounded("p50", s.P50, 1);
        w.WriteRounded("p90", s.P90, 1);
        w.WriteRounded("p99", s.P99, 1);
        w.WriteRounded("max", s.Max, 1);
        w.WriteStartArray("histogram");
        foreach (var c in s.Histogram) w.WriteNumberValue(c);
        w.WriteEndArray();
    }

    public static void Render(RestoreReport r, string why, RestoreReport? eager, ManyRestoresResult? many, IAnsiConsole console)
    {
        console.MarkupLine($"[bold]snapshot restore[/]: {Markup.Escape(r.Directory)}, {r.Vcpus} vCPU(s), {ValueParsers.FormatSize(r.RamBytes)}, engine {r.Engine.Name()} ({Markup.Escape(why)})");
        var t = new Table().AddColumns("Measure", "Value");
        t.AddRow("first instruction", Ms(r.FirstInstructionMs) + (eager is null ? "" : $" (eager: {Ms(eager.FirstInstructionMs)})"));
        t.AddRow("all pages resident", r.ResidentMs > 0 ? Ms(r.ResidentMs) : "— (no fill)");
        t.AddRow("guest verified its memory", Ms(r.GuestDoneMs));
        t.AddRow("pages", $"{Output.Count(r.PagesDemand)} read on demand, {Output.Count(r.PagesDemandZero)} zero on demand, {Output.Count(r.PagesPrefetched)} prefetched, {Output.Count(r.PagesZero)} zero in the snapshot");
        if (r.Replayed) t.AddRow("working-set replay", $"{Output.Count(r.WorkingSetPages)} pages, {Output.Count(r.FaultsAvoidedByReplay)} faults avoided, present at {Ms(r.WorkingSetMs)}");
        else if (r.Recorded) t.AddRow("working set", $"recorded {Output.Count(r.PagesDemandTotal)} first touches for the next restore");
        var l = r.FaultLatency;
        if (r.HandlerRestarts is null)
            t.AddRow($"fault latency ({r.FaultLatencyAt})", l.Count == 0 ? "no faults" : Inv($"p50 {l.P50:0.0} µs, p99 {l.P99:0.0} µs, max {l.Max:0.0} µs ({l.Count} faults)"));
        else   // the handler reads the faults: this side sees the vCPUs' sleep and the pages present
            t.AddRow("vCPUs waiting for the handler", Inv($"{r.VcpuSleptMs:0.0} ms in all") +
                (r.PagesDemandTotal > 0 ? Inv($", {r.VcpuSleptMs * 1000 / r.PagesDemandTotal:0.0} µs per page installed") : ""));
        if (r.HandlerRestarts is { } hr) t.AddRow("handler restarts", hr == 0 ? "0" : $"[yellow]{hr}[/] (a handler died; a new one took over)");
        t.AddRow("guest mismatches", r.GuestMismatches == 0 ? "[green]0[/]" : $"[red]{r.GuestMismatches}[/]");
        if (many is not null)
            t.AddRow($"{many.Restores.Count} restores at once", Inv($"all done in {many.WallMs:0.0} ms ({many.WallMs / Math.Max(1, Math.Max(r.GuestDoneMs, r.ResidentMs)):0.00}x one), first instruction ") +
                Inv($"{many.Restores.Min(c => c.FirstInstructionMs):0.0}–{many.Restores.Max(c => c.FirstInstructionMs):0.0} ms"));
        console.Write(t);
        var manyMismatches = many?.Restores.Aggregate(0UL, (a, c) => a + c.GuestMismatches) ?? 0;
        if (r.GuestMismatches != 0 || eager is { GuestMismatches: not 0 } || manyMismatches != 0)
            throw new GuestException($"the restored guest found {r.GuestMismatches} mismatching qwords");
    }

    private static string Ms(double ms) => Inv($"{ms:0.00} ms");
    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
