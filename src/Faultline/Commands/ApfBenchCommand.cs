using System.CommandLine;
using System.Globalization;
using Faultline.Guest.Tasks;
using Faultline.Paging.AsyncPf;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline bench apf</c>: the mixed workload (a CPU task and N memory tasks per vCPU, pages arriving after a fixed
/// latency) under sync faults and the x86 async-PF protocol, always and auto, interleaved; speedups against the
/// ideal, notification costs with their tails.
/// </summary>
internal static class ApfBenchCommand
{
    public static Command Create()
    {
        var latency = new Option<string>("--latency")
        {
            Description = "Page latencies, comma-separated (e.g. 30us,100us,1ms,10ms)", HelpName = "T,T,...", DefaultValueFactory = _ => "10ms",
        };
        var vcpus = CliOptions.IntList("--vcpus", "vCPU counts", [1, 2], min: 1, max: TaskLayout.MaxVcpus);
        var memTasks = CliOptions.IntList("--mem-tasks", "Memory tasks per vCPU", [1, 4], min: 1, max: TaskLayout.MaxMemoryTasks);
        var protocol = new Option<string>("--protocol")
        {
            Description = "Notification protocols to compare with sync (sync always runs: it is the baseline): x86, arm", HelpName = "P,P,...", DefaultValueFactory = _ => "sync,x86",
        };
        var poll = new Option<string>("--ready-poll")
        {
            Description = "While async faults are outstanding, a self-kick on the vCPU's own CPU this often (0: only the cross-CPU kick)", HelpName = "T",
            DefaultValueFactory = _ => "0",
        };
        var delivery = new Option<string>("--delivery")
        {
            Description = "Scheduling of the thread that delivers the delayed pages: fifo (SCHED_FIFO where allowed, else normal: on time at 1 ms "
                + "and more; at 30 us mostly within 0.4 ms, a few pages 7-37 ms late) or normal (its timer's wake-up can wait for a CPU's next tick behind a vCPU: pages up to ~6 ms late)",
            HelpName = "fifo|normal", DefaultValueFactory = _ => "fifo",
        };
        var repeat = CliOptions.Int("--repeat", "Runs per row, interleaved; the median is reported", 3, min: 1, max: 50);
        var json = CliOptions.OutputFile("--json", "Write the rows as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var svg = CliOptions.OutputFile("--svg", "Write an SVG of speedup against latency, with the ideal, to FILE", stdoutAllowed: false);
        var command = new Command("apf", "Async page faults: the mixed workload under sync and each async-PF protocol (x86, arm; always, auto) at each latency")
        {
            latency, vcpus, memTasks, protocol, poll, delivery, repeat, json, svg,
        };
        command.SetAction(pr =>
        {
            var lats = pr.GetValue(latency)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => MigrateOptions.ParseDuration(s, "--latency", "a latency")).ToList();
            if (lats.Count == 0 || lats.Any(l => l <= TimeSpan.Zero)) throw new UsageException("--latency needs latencies above zero, e.g. 30us,10ms");
            var protocols = new List<NotifyProtocol>();
            foreach (var p in pr.GetValue(protocol)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                protocols.Add(p switch
                {
                    "sync" => NotifyProtocol.Sync, "x86" => NotifyProtocol.X86, "arm" => NotifyProtocol.Arm,
                    _ => throw new UsageException($"--protocol: '{p}' is not one of sync, x86, arm"),
                });
            var plan = new ApfBenchPlan(lats, pr.GetValue(vcpus)!.Values, pr.GetValue(memTasks)!.Values, pr.GetValue(repeat))
            {
                Protocols = protocols.Where(p => p != NotifyProtocol.Sync).Distinct().ToList(),
                ReadyPoll = MigrateOptions.ParseDuration(pr.GetValue(poll)!, "--ready-poll", "a period"),
                RealTimeDelivery = pr.GetValue(delivery) switch
                {
                    "fifo" => true, "normal" => false,
                    var d => throw new UsageException($"--delivery: '{d}' is not one of fifo, normal"),
                },
            };
            return Execute(plan, pr.GetValue(json), pr.GetValue(svg), pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error);
        });
        return command;
    }

    private static int Execute(ApfBenchPlan plan, OutputTarget? json, OutputTarget? svg, TextWriter stdout, TextWriter stderr)
    {
        var human = Output.Human(json, stdout, stderr);
        var console = Output.Console(human);
        IReadOnlyList<ApfBenchRow> rows = [];
        if (Output.CanShowProgress(human))
            console.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("bench apf", maxValue: 1);
                    rows = ApfBench.Run(plan, (what, done, total) => { task.MaxValue = total; task.Description = what.Length == 0 ? "bench apf" : what; task.Value = done; });
                });
        else rows = ApfBench.Run(plan);
        json?.Write(stdout, s => ApfBench.WriteJson(s, rows, BenchCommand.HostFacts()));
        svg?.Write(stdout, ApfBench.Svg(rows));
        Render(console, plan, rows);
        return rows.Sum(r => r.Mismatches) == 0 ? 0 : 1;
    }

    private static void Render(IAnsiConsole console, ApfBenchPlan plan, IReadOnlyList<ApfBenchRow> rows)
    {
        var ci = CultureInfo.InvariantCulture;
        console.MarkupLine($"[bold]bench apf[/]: per vCPU a CPU task and N memory tasks; memory wait {plan.MemoryWait.TotalMilliseconds:0} ms per vCPU under sync; median of {plan.Repeat}, interleaved");
        var t = new Table().AddColumns("latency", "vcpus", "mem", "protocol", "s", "speedup", "ideal", "not present", "ready", "notify µs p50 / p99 / max", "exits/async", "pair speedups");
        foreach (var r in rows)
            t.AddRow(Lat(r.LatencyUs), r.Vcpus.ToString(ci), r.MemTasks.ToString(ci), r.Protocol == "sync" ? "sync" : $"{r.Protocol} {r.Policy}",
                r.Seconds.ToString("0.000", ci), r.Protocol == "sync" ? "1.00x" : r.Speedup.ToString("0.00x", ci), r.IdealSpeedup.ToString("0.0x", ci),
                r.NotPresent.ToString(ci), r.Ready.ToString(ci),
                r.NotPresent == 0 ? "" : $"{r.NotifyUsP50:0} / {r.NotifyUsP99:0} / {r.NotifyUsMax:0}", r.NotPresent == 0 ? "" : r.ExitsPerAsyncFault.ToString("0.0", ci),
                r.Protocol == "sync" ? "" : string.Join(" ", r.PairRatios.Select(p => p.ToString("0.00", ci))));
        console.Write(t);
        console.MarkupLine("[grey]notify = one fault's two notifications: fault exit → the guest parks the task (x86: #PF handler; arm: SDEI handler, COMPLETE_AND_RESUME, park), plus page installed → its task running again (guest TSC mapped to host time)[/]");
        console.MarkupLine("[grey]ideal = (CPU work + memory wait) / max(CPU work, memory wait / mem tasks): perfect overlap, free notifications[/]");
        var late = rows.Count == 0 ? 0 : rows.Max(r => r.DeliveryLateUsMax);
        console.MarkupLine($"[grey]pages delivered by {(rows.All(r => r.DeliveryRealTime) ? "a SCHED_FIFO thread" : plan.RealTimeDelivery ? "a normal thread (SCHED_FIFO refused)" : "a normal thread")}, "
            + $"the latest {late.ToString("0", ci)} µs after its due time[/]");
        var bad = rows.Sum(r => r.Mismatches);
        console.MarkupLine(bad == 0 ? "[green]guest checks: every page read had the source's contents[/]" : $"[red]guest checks: {bad} pages read with wrong contents[/]");
    }

    private static string Lat(double us) => us >= 1000 ? $"{us / 1000:0.###} ms" : $"{us:0} µs";
}
