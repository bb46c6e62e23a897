using System.CommandLine;
using System.Globalization;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Bench;
using Faultline.Paging.Engines;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline bench paging</c>: the kernel's demand_paging_test in C#, over every paging engine, with the C reference
/// interleaved for the rows it covers. Prints a table laid out like seed 002's (rows = mechanism, columns = vCPU counts,
/// cells = pages/s, median of --repeat runs), and optionally JSON and an SVG chart.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var bench = new Command("bench", "Measure Faultline's mechanisms");
        bench.Subcommands.Add(CreatePaging());
        bench.Subcommands.Add(ApfBenchCommand.Create());
        return bench;
    }

    private static Command CreatePaging()
    {
        var vcpus = CliOptions.IntList("--vcpus", "vCPU counts, one column each", [1, 2, 8], min: 1, max: GuestLayout.MaxVcpus);
        var mem = GuestSizes.Ram("--mem-per-vcpu", "Guest RAM each vCPU pages in", 64 * ValueParsers.MiB);
        var modes = new Option<string>("--modes")
        {
            Description = $"Engines to run, comma-separated: {PagingModes.AllNames}",
            HelpName = "MODE,MODE,...",
            DefaultValueFactory = _ => "none,missing,minor,exits,bitmap,missing+bitmap,minor+bitmap",
        };
        var backing = CliOptions.Choice<Backing?>("--backing", "Guest RAM backing (auto: shmem for minor modes, anon otherwise)",
            ("auto", null), ("anon", Backing.Anonymous), ("shmem", Backing.Shmem));
        var guestMode = CliOptions.Choice("--guest-mode", "Privilege level of the workload", ("user", PrivilegeLevel.User), ("kernel", PrivilegeLevel.Kernel));
        var uffds = CliOptions.Choice("--uffds", "One userfaultfd for all RAM, or one per vCPU range", ("single", UffdLayout.Single), ("per-vcpu", UffdLayout.PerVcpu));
        var readers = CliOptions.Int("--readers", "Reader threads (0: one per vCPU, as refpaging)", 0, min: 0, max: 256);
        var access = CliOptions.Choice("--access", "What the guest does to each page", ("write", Workload.Write), ("read", Workload.Read));
        var order = CliOptions.Workload("Page order: sequential (refpaging's), random (each page once), hotset (90% in a drifting 1/16 hot set)");
        order.Aliases.Add("--order");
        var recovery = CliOptions.Choice("--cpl3-address", "How a CPL3 fault without an address is located",
            ("decode", AddressRecovery.Decode), ("uffd-thread-id", AddressRecovery.UffdThreadId));
        var repeat = CliOptions.Int("--repeat", "Runs per row; the median is reported", 3, min: 1, max: 100);
        var reference = new Option<string?>("--reference") { Description = "Path of the C reference binary (refpaging) to run interleaved", HelpName = "PATH" };
        var json = CliOptions.OutputFile("--json", "Write the rows as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var svg = CliOptions.OutputFile("--svg", "Write an SVG chart (pages/s against vCPUs) to FILE", stdoutAllowed: false);
        var command = new Command("paging", "Demand-paging rate of every engine (demand_paging_test in C#), against the C reference")
        {
            vcpus, mem, modes, backing, guestMode, uffds, readers, access, order, recovery, repeat, reference, json, svg,
        };
        command.SetAction(pr =>
        {
            GuestSizes.CheckPerVcpu("--mem-per-vcpu", pr.GetValue(mem), pr.GetValue(vcpus)!.Values);
            var plan = new BenchPlan(ParseModes(pr.GetValue(modes)!), pr.GetValue(vcpus)!.Values, pr.GetValue(mem).Bytes, pr.GetValue(backing).Value,
                pr.GetValue(guestMode).Value, pr.GetValue(uffds).Value, pr.GetValue(readers) is 0 ? null : pr.GetValue(readers),
                pr.GetValue(order).Value, pr.GetValue(access).Value, pr.GetValue(repeat), pr.GetValue(reference))
            {
                AddressRecovery = pr.GetValue(recovery).Value,
            };
            return Execute(plan, pr.GetValue(json), pr.GetValue(svg), pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error);
        });
        return command;
    }

    private static List<PagingMode> ParseModes(string text)
    {
        var list = new List<PagingMode>();
        foreach (var word in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!PagingModes.TryParse(word, out var m)) throw new UsageException($"--modes: '{word}' is not one of {PagingModes.AllNames}");
            if (!list.Contains(m)) list.Add(m);
        }
        return list;
    }

    private static int Execute(BenchPlan plan, OutputTarget? json, OutputTarget? svg, TextWriter stdout, TextWriter stderr)
    {
        // a native (ahead-of-time) build has no JIT to wait for: nothing to re-run
        if (System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported && ReferenceEquals(stdout, Console.Out) && Environment.GetEnvironmentVariable(NoTieringVariable) != "0")
            return RerunWithoutTieredJit();
        // an explicit --backing that contradicts a mode is a usage error; with auto each mode gets its own backing
        var specs = plan.Specs();
        var human = Output.Human(json, stdout, stderr);
        var console = Output.Console(human);
        IReadOnlyList<BenchRow> rows;
        if (Output.CanShowProgress(human))
        {
            rows = [];
            console.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("bench paging", maxValue: specs.Count * plan.Repeat);
                    rows = PagingBench.Run(plan, (what, done, total) => { task.Description = what.Length == 0 ? "bench paging" : what; task.Value = done; });
                });
        }
        else rows = PagingBench.Run(plan);

        json?.Write(stdout, s => BenchReport.WriteJson(s, rows, HostFacts()));
        svg?.Write(stdout, BenchReport.Svg(rows, $"demand paging, {plan.MemPerVcpu >> 20} MiB per vCPU, {(plan.Level == PrivilegeLevel.User ? "CPL3" : "CPL0")}"));
        Render(console, plan, rows);
        return 0;
    }

    private const string NoTieringVariable = "DOTNET_TieredCompilation";

    /// <summary>
    /// Measured runs want the JIT done before they start: with tiered compilation, tier-1 recompiles run on a
    /// background thread during the runs and take one of this host's two cores from a vCPU (measured: 0.90x of
    /// refpaging at CPL0 with tiering, 0.96x without). Tiering stays on for every other command (the migration's
    /// downtime path is warmed up and is faster with quick JIT), so the bench re-runs itself in a child process
    /// without it; stdio is inherited.
    /// </summary>
    private static int RerunWithoutTieredJit()
    {
        var exe = Environment.ProcessPath ?? throw new FaultlineException("cannot find the running executable to re-run the bench");
        var args = Environment.GetCommandLineArgs();
        var psi = new System.Diagnostics.ProcessStartInfo(exe) { UseShellExecute = false };
        // under the `dotnet` host the first argument is the CLI's dll; under the apphost it is the apphost itself
        var first = Path.GetFileNameWithoutExtension(exe) == "dotnet" ? 0 : 1;
        foreach (var a in args.AsSpan(first)) psi.ArgumentList.Add(a);
        psi.Environment[NoTieringVariable] = "0";
        psi.Environment["DOTNET_ReadyToRun"] = "0";   // ./faultline is ReadyToRun-compiled: the bench's hot paths are JIT-compiled, as measured
        using var child = System.Diagnostics.Process.Start(psi) ?? throw new FaultlineException($"cannot start {exe}");
        child.WaitForExit();
        return child.ExitCode;
    }

    internal static Dictionary<string, string> HostFacts() => new()
    {
        ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
        ["kernel"] = File.Exists("/proc/sys/kernel/osrelease") ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : "?",
        ["cpus"] = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// One mode's mechanism for the legend. An engine describes each run ("… by 2 reader(s)" for the 2-vCPU column), so a
    /// mechanism that differs between the columns is given with the columns it holds for, never one column's for all.
    /// </summary>
    internal static string Legend(IReadOnlyList<BenchRow> modeRows)
    {
        var byMechanism = modeRows.GroupBy(r => r.Mechanism).ToList();
        if (byMechanism.Count == 1) return byMechanism[0].Key;
        return string.Join("; ", byMechanism.Select(m =>
        {
            var counts = m.Select(r => r.Vcpus).Distinct().Order().ToList();
            return $"{m.Key} ({string.Join(", ", counts)} vCPU{(counts is [1] ? "" : "s")})";
        }));
    }

    private static void Render(IAnsiConsole console, BenchPlan plan, IReadOnlyList<BenchRow> rows)
    {
        var counts = rows.Select(r => r.Vcpus).Distinct().OrderBy(v => v).ToArray();
        var withRef = rows.Any(r => r.ReferencePagesPerSec is not null);
        console.MarkupLine($"[bold]bench paging[/]: {plan.MemPerVcpu >> 20} MiB per vCPU, guest at {(plan.Level == PrivilegeLevel.User ? "CPL3" : "CPL0")}, " +
                           $"{(plan.Access == Workload.Write ? "write" : "read")} {plan.Order.ToString().ToLowerInvariant()}, median of {plan.Repeat} (pages/s)");
        var t = new Table().AddColumn("vcpus");
        foreach (var c in counts) t.AddColumn(new TableColumn(c.ToString(CultureInfo.InvariantCulture)).RightAligned());
        foreach (var label in rows.Select(r => r.Label).Distinct())
        {
            var cells = new List<string> { Markup.Escape(label) };
            foreach (var c in counts)
            {
                var r = rows.FirstOrDefault(x => x.Label == label && x.Vcpus == c);
                cells.Add(r is null ? "" : Output.Count(r.PagesPerSec) + (r.Ratio is { } q ? $" [grey](ref {Output.Count(r.ReferencePagesPerSec!.Value)}, {q.ToString("0.00", CultureInfo.InvariantCulture)}x)[/]" : ""));
            }
            t.AddRow(cells.ToArray());
        }
        console.Write(t);
        if (plan.Order != AccessOrder.Sequential)
            foreach (var r in rows)
                console.MarkupLine($"[grey]{Markup.Escape(r.Label)}, {r.Vcpus} vCPU(s): {Output.Count(r.DemandFaults)} demand faults, " +
                                   $"{Output.Count(r.PagesTouched)} of {Output.Count(r.Pages)} pages touched, {r.Seconds.ToString("0.000", CultureInfo.InvariantCulture)} s[/]");
        if (withRef) console.MarkupLine("[grey]ref = C reference (refpaging) in the same run, interleaved; ratio = Faultline / reference[/]");
        foreach (var g in rows.GroupBy(r => (r.Mode, r.Backing)))
            console.MarkupLine($"[grey]{Markup.Escape(g.Key.Mode)} ({g.Key.Backing}): {Markup.Escape(Legend(g.ToList()))}[/]");
        var worstAlloc = rows.Max(r => r.AllocBytesPerFault);
        console.MarkupLine($"[grey]fault-path allocation: at most {worstAlloc.ToString("0.###", CultureInfo.InvariantCulture)} bytes per fault; engine memory at most {(rows.Max(r => r.EngineMemoryFraction) * 100).ToString("0.###", CultureInfo.InvariantCulture)}% of guest RAM[/]");
    }
}
