using System.Diagnostics;
using System.Globalization;
using Faultline.Migration.Reporting;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>The migrate report as a table: the wall time and its parts first, then what docs/counters.md names.</summary>
internal static class MigrationReportTable
{
    /// <summary>
    /// The report table. Labels follow docs/counters.md (which counter, on which end); the JSON keys stay as they are.
    /// The first row is the wall time the CLI measured around the whole command.
    /// </summary>
    public static void Render(MigrationReport r, string? sourceLine, TextWriter output, Stopwatch? wall)
    {
        var console = Output.Console(output);
        var t = new Table().Border(TableBorder.Rounded).AddColumn("migration").AddColumn(new TableColumn("").RightAligned());
        string F(double v, string unit) => v.ToString("0.000", CultureInfo.InvariantCulture) + " " + unit;
        if (r.Wall is { } w)
            t.AddRow("wall time (this command's start → every page present and verified)", string.Create(CultureInfo.InvariantCulture,
                $"{w.TotalMs:0} ms = start-up {w.StartupMs:0} (source start ∥ destination preparation {w.PrepareMs:0}) + connect and hand-over {w.ConnectAndHandOverMs:0} + post-copy {w.PostcopyMs:0} + verification and the rest {w.RestMs:0}"));
        else if (wall is not null) t.AddRow("wall time of this command (its start → this report, measured by the CLI)", F(wall.Elapsed.TotalMilliseconds, "ms"));
        t.AddRow("guest", Markup.Escape($"{r.Vcpus} vCPU(s), {r.RamBytes >> 20} MiB, workload {r.Workload}, engine {r.Engine}"));
        if (r.EngineReason.Length > 0) t.AddRow("engine", Markup.Escape($"{r.EngineMechanism} ({r.EngineReason})"));
        t.AddRow("link", Markup.Escape($"{r.Link}{(r.LinkDelayEmulated ? $", +{r.LinkDelayUs:0} µs each way (emulated in user space)" : ", no added delay")}"));
        t.AddRow("security", Markup.Escape(r.Security));
        t.AddRow("downtime (source pause → vCPUs running)", F(r.DowntimeMs, "ms"));
        t.AddRow("total (destination connected → every page present)", F(r.TotalMs, "ms"));
        t.AddRow("  of which post-copy (pause → every page present)", F(r.PostcopyMs, "ms"));
        if (r.PrepareMs is { } prep) t.AddRow("destination prepared before it connected (not in total)", F(prep, "ms"));
        if (r.RawStreamMs is { } raw)
            t.AddRow("plain socket streaming the same bytes", $"{F(raw, "ms")} (post-copy {r.PostcopyMs / raw:0.00}x, total {r.TotalMs / raw:0.00}x)");
        t.AddRow("pages at the destination (first copy of each)", string.Create(CultureInfo.InvariantCulture,
            $"{r.PagesTotal} = {r.PagesDemand} on demand + {r.PagesPushed} pushed ({r.PagesZero} zero); {r.PagesDuplicate} later copies dropped"));
        t.AddRow("demand requests (destination → source)", string.Create(CultureInfo.InvariantCulture,
            $"{r.DemandRequests} pages in {r.DemandFrames} frames; {r.DemandAlreadyPushed} for pages the source had sent already"));
        t.AddRow("requested pages installed for their waiters", string.Create(CultureInfo.InvariantCulture,
            $"{r.PagesToWaiters} to waiters ({r.RunPagesToFaultPath} of them from a push run)"));
        t.AddRow("installed", string.Create(CultureInfo.InvariantCulture,
            $"{r.EngineInstalled} pages ({r.InstalledByReceiver} by the receiver threads)"));
        t.AddRow("bytes on wire", $"{r.BytesOnWire:N0} ({r.PushRuns} page runs)");
        var l = r.FaultLatencyUs;
        t.AddRow("fault latency µs (p50 / p90 / p99 / max)", string.Create(CultureInfo.InvariantCulture, $"{l.P50:0.0} / {l.P90:0.0} / {l.P99:0.0} / {l.Max:0.0}  ({l.Count} faults)"));
        if (l.Count > 0) t.AddRow("fault latency histogram", Markup.Escape(l.CompactHistogram()));
        var rtt = r.LinkRttUs;
        t.AddRow("link round trip µs (p50 / min, urgent channel)", string.Create(CultureInfo.InvariantCulture, $"{rtt.P50:0.0} / {rtt.Min:0.0}  ({rtt.Count} pings)"));
        t.AddRow("fault latency target (round trip + 30 µs)", string.Create(CultureInfo.InvariantCulture,
            $"{r.FaultLatencyTargetUs:0.0} µs: p50 {(r.FaultLatencyTargetMet ? "[green]met[/]" : "[red]not met[/]")}"));
        var s = r.Scheduling;
        t.AddRow("demand path scheduling", Markup.Escape(string.Create(CultureInfo.InvariantCulture,
            $"carriers: destination {DemandPathScheduling.Name(s.Destination)}, source {DemandPathScheduling.Name(s.Source)}; vCPUs at nice {s.VcpuPostcopyNice} during post-copy, no change per fault")));
        t.AddRow("vCPU blocked ms", string.Join(", ", r.VcpuBlockedMs.Select(b => b.ToString("0.0", CultureInfo.InvariantCulture))));
        t.AddRow("image digest, source sha256 (SHA-256 of every page's CRC-32C)", r.SourceSha256);
        t.AddRow("image digest, received sha256", $"{r.ReceivedSha256} {(r.DigestsMatch ? "[green]match[/]" : "[red]DIFFER[/]")}");
        t.AddRow("guest mismatches", r.GuestMismatches == 0 ? "[green]0[/]" : $"[red]{r.GuestMismatches}[/]");
        if (r.Mixed is { } mx)
        {
            t.AddRow("CPU task, all vCPUs (M iterations/s)", string.Create(CultureInfo.InvariantCulture,
                $"{mx.CpuIterPerSecPostcopy / 1e6:0.0} during post-copy{(mx.CpuIterPerSecAfter is { } after ? $", {after / 1e6:0.0} after it (every page present)" : "")}"));
            t.AddRow("async page faults", Markup.Escape(mx.AsyncPf is { } a
                ? string.Create(CultureInfo.InvariantCulture,
                    $"--async-pf {mx.AsyncPfPolicy}, {mx.Protocol} protocol, guest {(mx.GuestEnabled ? "enabled" : "did not enable")}: {a.NotPresent} not present, {a.ReadyDelivered} ready"
                    + $"{(mx.Sdei is { } e ? $" ({e.Dispatched} SDEI handlers entered, {e.Completed} completed)" : "")}; "
                    + $"{a.SyncTotal} synchronous (policy {a.SyncPolicy}, limit {a.SyncLimit}, interrupts off {a.SyncInterruptsOff}, kernel mode {a.SyncKernelMode}, not enabled {a.SyncNotEnabled}); "
                    + $"notification cost used {a.PolicyNotifyCostUs:0} µs")
                : $"--async-pf never (guest {(mx.GuestEnabled ? "enabled" : "did not enable")} them): every fault waits"));
        }
        console.Write(t);
        if (sourceLine is not null) output.WriteLine(sourceLine);
        output.Flush();
    }
}
