using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Faultline.Paging.AsyncPf;

/// <summary>What <c>faultline bench apf</c> runs: every latency × vCPU count × memory-task count, each under sync and each protocol's always and auto.</summary>
public sealed record ApfBenchPlan(IReadOnlyList<TimeSpan> Latencies, IReadOnlyList<int> Vcpus, IReadOnlyList<int> MemoryTasks, int Repeat)
{
    /// <summary>The async protocols compared with sync (which always runs: it is the baseline).</summary>
    public IReadOnlyList<NotifyProtocol> Protocols { get; init; } = [NotifyProtocol.X86];
    /// <summary>How long the memory tasks of one vCPU wait for pages in all under sync (sets the page count per latency).</summary>
    public TimeSpan MemoryWait { get; init; } = TimeSpan.FromMilliseconds(200);
    public int MinPages { get; init; } = 16;
    public int MaxPages { get; init; } = 16384;
    public TimeSpan ReadyPoll { get; init; } = new AsyncPfOptions().ReadyPoll;
    /// <summary>The delayed source's delivery thread under SCHED_FIFO (<see cref="ApfRunSpec.RealTimeDelivery"/>).</summary>
    public bool RealTimeDelivery { get; init; }

    /// <summary>Pages per vCPU at a latency: the memory wait over the latency, bounded, a multiple of every task count.</summary>
    public int PagesPerVcpu(TimeSpan latency)
    {
        var p = (int)Math.Clamp(MemoryWait.TotalSeconds / Math.Max(latency.TotalSeconds, 1e-6), MinPages, MaxPages);
        return (p + 11) / 12 * 12;   // splits evenly into 1, 2, 3 or 4 memory tasks
    }
}

/// <summary>One row: a (latency, vCPUs, memory tasks, protocol, policy) cell's median over the repeats.</summary>
public sealed record ApfBenchRow(string Protocol, string Policy, int Vcpus, int MemTasks, double LatencyUs, int Pages, double Seconds, double Speedup, double IdealSpeedup,
    long NotPresent, long Ready, double NotifyUsP50, double NotifyUsP99, double NotifyUsMax, double NotPresentUsP50, double NotPresentUsP99, double ReadyUsP50,
    double ReadyUsP99, double ReadyUsMax, double KickUsP50, double KickUsP99, double KickUsMax, long Mismatches, double PolicyNotifyCostUs, IReadOnlyList<double> PairRatios)
{
    /// <summary>vCPU exits (KVM_RUN returns) per page the guest read, median run.</summary>
    public double ExitsPerPage { get; init; }
    /// <summary>Exits above sync's, per async fault: what the protocol's two notifications cost in exits.</summary>
    public double ExitsPerAsyncFault { get; init; }
    /// <summary>The latest any page was installed past its due time, over the runs (the delivery thread's lateness), µs.</summary>
    public double DeliveryLateUsMax { get; init; }
    /// <summary>Every run's delivery thread ran under SCHED_FIFO.</summary>
    public bool DeliveryRealTime { get; init; }
    /// <summary>Garbage collections during the runs (summed) and the longest total pause of one run, ms.</summary>
    public int GcCollections { get; init; }
    public double GcPauseMsMax { get; init; }
}

/// <summary>
/// The async-PF bench: the mixed workload of <see cref="ApfRun"/> under sync faults and each protocol (x86, arm; always,
/// and auto), interleaved run by run so that the host's noise hits every variant alike, medians and per-pair ratios. The
/// CPU task's work is calibrated once so that it equals one memory task's wait: the ideal speedup of M memory tasks
/// is then (W + P·L) / max(W, P·L/M) = 1 + M, what perfect overlap with zero notification cost would give.
/// </summary>
public static class ApfBench
{
    public static IReadOnlyList<ApfBenchRow> Run(ApfBenchPlan plan, Action<string, int, int>? progress = null)
    {
        var rate = CalibrateIterationsPerSecond();
        var cells = (from l in plan.Latencies from v in plan.Vcpus from m in plan.MemoryTasks select (l, v, m)).ToList();
        var variants = new List<(NotifyProtocol, AsyncPfMode)> { (NotifyProtocol.Sync, AsyncPfMode.Never) };
        foreach (var p in plan.Protocols)
            if (p != NotifyProtocol.Sync) { variants.Add((p, AsyncPfMode.Always)); variants.Add((p, AsyncPfMode.Auto)); }
        var results = new Dictionary<(TimeSpan, int, int, int), List<ApfRunResult>>();
        var total = plan.Repeat * cells.Count * variants.Count;
        var done = 0;
        for (var rep = 0; rep < plan.Repeat; rep++)
            foreach (var (l, v, m) in cells)
                for (var k = 0; k < variants.Count; k++)
                {
                    var which = (k + rep) % variants.Count;   // rotate the order: no variant always runs first
                    var (protocol, policy) = variants[which];
                    var pages = plan.PagesPerVcpu(l);
                    var work = (ulong)Math.Max(1, rate * (pages * l.TotalSeconds / m));
                    progress?.Invoke($"{l.TotalMicroseconds:0} µs, {v} vCPU, {m} mem, {Name(protocol, policy)}", done, total);
                    var r = ApfRun.Execute(new ApfRunSpec(v, m, l, protocol, policy, pages, work) { ReadyPoll = plan.ReadyPoll, RealTimeDelivery = plan.RealTimeDelivery });
                    if (!results.TryGetValue((l, v, m, which), out var list)) results[(l, v, m, which)] = list = [];
                    list.Add(r);
                    done++;
                }
        progress?.Invoke("", done, total);

        var rows = new List<ApfBenchRow>();
        foreach (var (l, v, m) in cells)
        {
            var sync = results[(l, v, m, 0)];
            var syncExits = Median(sync.Select(r => (double)r.Exits));
            for (var k = 0; k < variants.Count; k++)
            {
                var runs = results[(l, v, m, k)];
                var pages = plan.PagesPerVcpu(l);
                var pl = pages * l.TotalSeconds;
                var w = pl / m;
                var ideal = (w + pl) / Math.Max(w, pl / m);
                var secs = Median(runs.Select(r => r.Elapsed.TotalSeconds));
                var notify = runs.SelectMany(r => r.NotifyUs).ToList();
                var np = runs.SelectMany(r => r.NotPresentUs).ToList();
                var ready = runs.SelectMany(r => r.ReadyUs).ToList();
                // the host's share of "page ready": posted (and the vCPU kicked) → the guest's ACK exit
                var kick = runs.SelectMany(r => r.History).Where(h => h.Acked != 0).Select(h => (h.Acked - h.ReadyPosted) * 1e6 / System.Diagnostics.Stopwatch.Frequency).ToList();
                var (protocol, policy) = variants[k];
                var asyncFaults = Median(runs.Select(r => (double)(r.Async?.NotPresent ?? 0)));
                var exits = Median(runs.Select(r => (double)r.Exits));
                rows.Add(new ApfBenchRow(protocol.ToString().ToLowerInvariant(), protocol == NotifyProtocol.Sync ? "never" : policy.ToString().ToLowerInvariant(),
                    v, m, l.TotalMicroseconds, pages, secs, Median(sync.Select(r => r.Elapsed.TotalSeconds)) / secs, ideal,
                    runs.Sum(r => r.Async?.NotPresent ?? 0) / runs.Count, runs.Sum(r => r.GuestReady) / runs.Count,
                    Percentile(notify, 0.5), Percentile(notify, 0.99), notify.Count == 0 ? 0 : notify.Max(), Percentile(np, 0.5), Percentile(np, 0.99),
                    Percentile(ready, 0.5), Percentile(ready, 0.99), ready.Count == 0 ? 0 : ready.Max(),
                    Percentile(kick, 0.5), Percentile(kick, 0.99), kick.Count == 0 ? 0 : kick.Max(), runs.Sum(r => r.Mismatches),
                    runs.Average(r => r.Async?.PolicyNotifyCostUs ?? 0),
                    sync.Zip(runs).Select(p => p.First.Elapsed.TotalSeconds / p.Second.Elapsed.TotalSeconds).ToList())
                {
                    ExitsPerPage = exits / ((double)pages * v),
                    ExitsPerAsyncFault = asyncFaults == 0 ? 0 : (exits - syncExits) / asyncFaults,
                    DeliveryLateUsMax = runs.Max(r => r.DeliveryLateMax.TotalMicroseconds), DeliveryRealTime = runs.All(r => r.DeliveryRealTime),
                    GcCollections = runs.Sum(r => r.GcCollections), GcPauseMsMax = runs.Max(r => r.GcPause.TotalMilliseconds),
                });
            }
        }
        return rows;
    }

    private static string Name(NotifyProtocol p, AsyncPfMode m) => p == NotifyProtocol.Sync ? "sync" : $"{p.ToString().ToLowerInvariant()} {m.ToString().ToLowerInvariant()}";

    /// <summary>Iterations per second of the CPU task's loop (a CPU-task-only run, timed by the guest's TSC).</summary>
    public static double CalibrateIterationsPerSecond()
    {
        const ulong n = 400_000_000;
        var best = 0.0;
        for (var i = 0; i < 3; i++)
        {
            var r = ApfRun.Execute(new ApfRunSpec(1, 0, TimeSpan.Zero, NotifyProtocol.Sync, AsyncPfMode.Never, 12, n));
            best = Math.Max(best, n / r.CpuTaskDone[0].TotalSeconds);
        }
        return best;
    }

    public static double Median(IEnumerable<double> xs) => Percentile(xs.ToList(), 0.5);

    public static double Percentile(List<double> xs, double q)
    {
        if (xs.Count == 0) return 0;
        var s = xs.Order().ToList();
        return s[Math.Clamp((int)Math.Ceiling(q * s.Count) - 1, 0, s.Count - 1)];
    }

    public static void WriteJson(Stream s, IReadOnlyList<ApfBenchRow> rows, IReadOnlyDictionary<string, string> host) =>
        Bench.BenchReport.WriteRows(s, rows, host, static (w, r) =>
        {
            w.WriteString("protocol", r.Protocol); w.WriteString("policy", r.Policy);
            w.WriteNumber("vcpus", r.Vcpus); w.WriteNumber("mem_tasks", r.MemTasks); w.WriteNumber("latency_us", r.LatencyUs);
            w.WriteNumber("pages_per_vcpu", r.Pages);
            w.WriteNumber("seconds", Math.Round(r.Seconds, 6)); w.WriteNumber("speedup", Math.Round(r.Speedup, 3)); w.WriteNumber("ideal_speedup", Math.Round(r.IdealSpeedup, 3));
            w.WriteNumber("not_present", r.NotPresent); w.WriteNumber("ready", r.Ready);
            w.WriteNumber("notify_us_p50", Math.Round(r.NotifyUsP50, 1)); w.WriteNumber("notify_us_p99", Math.Round(r.NotifyUsP99, 1)); w.WriteNumber("notify_us_max", Math.Round(r.NotifyUsMax, 1));
            w.WriteNumber("not_present_us_p50", Math.Round(r.NotPresentUsP50, 1)); w.WriteNumber("not_present_us_p99", Math.Round(r.NotPresentUsP99, 1));
            w.WriteNumber("ready_us_p50", Math.Round(r.ReadyUsP50, 1)); w.WriteNumber("ready_us_p99", Math.Round(r.ReadyUsP99, 1)); w.WriteNumber("ready_us_max", Math.Round(r.ReadyUsMax, 1));
            w.WriteNumber("ready_post_to_ack_us_p50", Math.Round(r.KickUsP50, 1)); w.WriteNumber("ready_post_to_ack_us_p99", Math.Round(r.KickUsP99, 1)); w.WriteNumber("ready_post_to_ack_us_max", Math.Round(r.KickUsMax, 1));
            w.WriteNumber("exits_per_page", Math.Round(r.ExitsPerPage, 3)); w.WriteNumber("exits_per_async_fault", Math.Round(r.ExitsPerAsyncFault, 2));
            w.WriteNumber("delivery_late_us_max", Math.Round(r.DeliveryLateUsMax, 1)); w.WriteBoolean("delivery_real_time", r.DeliveryRealTime);
            w.WriteNumber("gc_collections", r.GcCollections); w.WriteNumber("gc_pause_ms_max", Math.Round(r.GcPauseMsMax, 2));
            w.WriteNumber("guest_mismatches", r.Mismatches); w.WriteNumber("policy_notify_cost_us", Math.Round(r.PolicyNotifyCostUs, 1));
            w.WriteStartArray("pair_speedups");
            foreach (var p in r.PairRatios) w.WriteNumberValue(Math.Round(p, 3));
            w.WriteEndArray();
        });

    /// <summary>Speedup over sync against latency (log scale), one line per policy and memory-task count (1 vCPU; 2 dashed), the ideal in grey.</summary>
    public static string Svg(IReadOnlyList<ApfBenchRow> rows)
    {
        const int W = 640, H = 400, L = 60, R = 180, T = 30, B = 50;
        var lats = rows.Select(r => r.LatencyUs).Distinct().Order().ToList();
        var maxY = Math.Max(2, Math.Ceiling(rows.Max(r => Math.Max(r.Speedup, r.IdealSpeedup))));
        double X(double lat) => lats.Count == 1 ? L + (W - L - R) / 2.0 : L + (Math.Log10(lat) - Math.Log10(lats[0])) / (Math.Log10(lats[^1]) - Math.Log10(lats[0])) * (W - L - R);
        double Y(double s) => H - B - s / maxY * (H - T - B);
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.Append(ci, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\">\n");
        sb.Append(ci, $"<text x=\"{L}\" y=\"18\" font-size=\"13\">async page faults: speedup over sync against fetch latency</text>\n");
        sb.Append(ci, $"<line x1=\"{L}\" y1=\"{H - B}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"black\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{H - B}\" stroke=\"black\"/>\n");
        for (var y = 0; y <= maxY; y++)
            sb.Append(ci, $"<text x=\"{L - 8}\" y=\"{Y(y) + 4:0}\" text-anchor=\"end\">{y}x</text><line x1=\"{L}\" y1=\"{Y(y):0}\" x2=\"{W - R}\" y2=\"{Y(y):0}\" stroke=\"#eee\"/>\n");
        foreach (var l in lats)
            sb.Append(ci, $"<text x=\"{X(l):0}\" y=\"{H - B + 16}\" text-anchor=\"middle\">{(l >= 1000 ? $"{l / 1000:0.#} ms" : $"{l:0} µs")}</text>\n");
        sb.Append(ci, $"<text x=\"{(L + W - R) / 2}\" y=\"{H - 12}\" text-anchor=\"middle\">page latency</text>\n");
        string[] colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
        var series = rows.Where(r => r.Protocol != "sync").GroupBy(r => (r.Protocol, r.Policy, r.MemTasks, r.Vcpus)).OrderBy(g => g.Key.Vcpus).ThenBy(g => g.Key.MemTasks).ThenBy(g => g.Key.Protocol).ThenBy(g => g.Key.Policy).ToList();
        var legendY = T + 10;
        var i = 0;
        foreach (var idealGroup in rows.GroupBy(r => r.MemTasks))
        {
            var pts = string.Join(" ", idealGroup.GroupBy(r => r.LatencyUs).OrderBy(g => g.Key).Select(g => $"{X(g.Key).ToString("0", ci)},{Y(g.First().IdealSpeedup).ToString("0", ci)}"));
            sb.Append(ci, $"<polyline points=\"{pts}\" fill=\"none\" stroke=\"#aaa\" stroke-width=\"2\" stroke-dasharray=\"2,3\"/>\n");
            sb.Append(ci, $"<text x=\"{W - R + 8}\" y=\"{legendY}\" fill=\"#888\">ideal, {idealGroup.Key} mem task(s)</text>\n");
            legendY += 14;
        }
        foreach (var g in series)
        {
            var c = colours[i++ % colours.Length];
            var dash = g.Key.Vcpus > 1 ? " stroke-dasharray=\"6,3\"" : "";
            var pts = string.Join(" ", g.OrderBy(r => r.LatencyUs).Select(r => $"{X(r.LatencyUs).ToString("0", ci)},{Y(r.Speedup).ToString("0", ci)}"));
            sb.Append(ci, $"<polyline points=\"{pts}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>\n");
            sb.Append(ci, $"<text x=\"{W - R + 8}\" y=\"{legendY}\" fill=\"{c}\">{g.Key.Protocol} {g.Key.Policy}, {g.Key.Vcpus} vCPU, {g.Key.MemTasks} mem</text>\n");
            legendY += 14;
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }
}
