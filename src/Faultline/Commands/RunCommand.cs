using System.CommandLine;
using System.Globalization;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline run --vcpus N --mem SIZE [--guest-mode user|kernel] [--backing anon|shmem] [--qwords N] [--workload sequential|random|hotset] [--json [FILE|-]]</c>:
/// boots a generated guest, runs the Write then the Verify workload on every vCPU (each on its own part of guest RAM,
/// as demand_paging_test splits it), checks every written qword from the host too, and prints pages and mismatches.
/// </summary>
internal static class RunCommand
{
    /// <summary>The pattern's seed: qword at GPA a holds a + Seed.</summary>
    public const ulong Seed = 0x5eed_0000_f417;

    public static Command Create()
    {
        var vcpus = CliOptions.Int("--vcpus", "Number of vCPUs", 1, min: 1, max: GuestLayout.MaxVcpus);
        var mem = GuestSizes.Ram("--mem", "Guest RAM under test, split evenly between the vCPUs (e.g. 512K, 64M, 1G)", 64 * ValueParsers.MiB);
        var mode = CliOptions.Choice("--guest-mode", "Privilege level the workloads run at",
            ("user", PrivilegeLevel.User), ("kernel", PrivilegeLevel.Kernel));
        var backing = CliOptions.Choice("--backing", "How guest RAM is backed on the host",
            ("anon", Backing.Anonymous), ("shmem", Backing.Shmem));
        var qwords = CliOptions.Int("--qwords", "Qwords written and verified per page", 1, min: 1, max: 512);
        var workload = CliOptions.Workload("Page order of both workloads: sequential, random (each page once), hotset (90% in a drifting 1/16 hot set)");
        var json = CliOptions.OutputFile("--json", "Write the result as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var command = new Command("run", "Run the Write then Verify workloads on a generated guest and report pages and mismatches")
        {
            vcpus, mem, mode, backing, qwords, workload, json,
        };
        command.SetAction(pr =>
        {
            GuestSizes.CheckSplit("--mem", pr.GetValue(mem), pr.GetValue(vcpus));
            return Execute(
                new MachineConfig(pr.GetValue(vcpus), pr.GetValue(mem).Bytes, pr.GetValue(backing).Value), pr.GetValue(mode).Value, pr.GetValue(qwords),
                pr.GetValue(workload).Value, pr.GetValue(json), pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error);
        });
        return command;
    }

    private static int Execute(MachineConfig config, PrivilegeLevel level, int qwords, AccessOrder order, OutputTarget? json, TextWriter stdout, TextWriter stderr)
    {
        using var m = GuestMachine.Create(config);   // MachineConfig.Validate: a size that does not split → UsageException (exit 2)
        WorkloadArgs Args(int i) => m.ArgsFor(i, Seed, qwords, order);
        var write = m.Run(Workload.Write, Args, level).ThrowIfFailed();
        var (hostMismatches, touched) = HostCheck(m, qwords, Args);
        var verify = m.Run(Workload.Verify, Args, level).ThrowIfFailed();
        var result = new RunResult(config, level, qwords, m.Ram.PageCount, write.TotalResult, verify.TotalResult, hostMismatches, write.Elapsed, verify.Elapsed)
        {
            Order = order, PagesTouched = touched,
        };

        json?.Write(stdout, Json(result));
        Render(result, Output.Console(Output.Human(json, stdout, stderr)));
        if (result.PagesWritten != result.Accesses)
            throw new GuestException($"the guest wrote {result.PagesWritten} pages of {result.Accesses}");
        if (result.Mismatches != 0 || result.HostMismatches != 0)
            throw new GuestException($"verify found {result.Mismatches} mismatching qwords in the guest and {result.HostMismatches} on the host");
        return 0;
    }

    /// <summary>
    /// The host reads back every qword the guest wrote, in the pages the host twin of its order says it touched (all of
    /// them unless hotset), and finds the first qword of every other page still zero.
    /// </summary>
    private static (ulong Wrong, ulong Touched) HostCheck(GuestMachine m, int qwords, Func<int, WorkloadArgs> args)
    {
        ulong wrong = 0, touchedPages = 0;
        for (var v = 0; v < m.Vcpus.Count; v++)
        {
            var a = args(v);
            var touched = a.TouchedPages();
            touchedPages += (ulong)touched.Count;
            for (ulong p = 0; p < a.Pages; p++)
            {
                var page = a.Start + p * GuestAddress.PageSize;
                if (!touched.Contains(p)) { if (m.Ram.Qword(new GuestAddress(page)) != 0) wrong++; continue; }
                for (var q = 0UL; q < (ulong)qwords; q++)
                {
                    var gpa = new GuestAddress(page + q * 8);
                    if (m.Ram.Qword(gpa) != gpa.Value + Seed) wrong++;
                }
            }
        }
        return (wrong, touchedPages);
    }

    private sealed record RunResult(
        MachineConfig Config, PrivilegeLevel Level, int Qwords, ulong Pages, ulong PagesWritten, ulong Mismatches, ulong HostMismatches,
        TimeSpan WriteTime, TimeSpan VerifyTime)
    {
        public AccessOrder Order { get; init; }
        /// <summary>Distinct pages the workloads touched (all of them unless hotset).</summary>
        public ulong PagesTouched { get; init; }
        /// <summary>Pages each workload accessed: one per page of the range for every order (hotset repeats some).</summary>
        public ulong Accesses => Pages;
        public string OrderWord => Order.ToString().ToLowerInvariant();
        public string Mode => Level == PrivilegeLevel.User ? "user" : "kernel";
        public string BackingWord => Config.Backing == Backing.Anonymous ? "anon" : "shmem";
    }

    private static string Json(RunResult r) => JsonOutput.Text(w =>
    {
        w.WriteStartObject();
        w.WriteNumber("vcpus", r.Config.Vcpus);
        w.WriteNumber("mem_bytes", r.Config.RamBytes);
        w.WriteString("guest_mode", r.Mode);
        w.WriteString("backing", r.BackingWord);
        w.WriteNumber("qwords_per_page", r.Qwords);
        w.WriteString("workload", r.OrderWord);
        w.WriteNumber("pages", r.Pages);
        w.WriteNumber("pages_touched", r.PagesTouched);
        w.WriteNumber("pages_written", r.PagesWritten);
        w.WriteNumber("mismatches", r.Mismatches);
        w.WriteNumber("host_mismatches", r.HostMismatches);
        w.WriteRounded("write_seconds", r.WriteTime.TotalSeconds, 4);
        w.WriteRounded("verify_seconds", r.VerifyTime.TotalSeconds, 4);
        w.WriteRounded("write_pages_per_second", Rate(r.Pages, r.WriteTime), 0);
        w.WriteRounded("verify_pages_per_second", Rate(r.Pages, r.VerifyTime), 0);
        w.WriteEndObject();
    });

    private static void Render(RunResult r, IAnsiConsole console)
    {
        console.MarkupLine($"[bold]run[/]: {r.Config.Vcpus} vCPU(s), {ValueParsers.FormatSize(r.Config.RamBytes)} guest RAM ({r.BackingWord}), " +
                           $"workloads at {(r.Level == PrivilegeLevel.User ? "CPL3 (user)" : "CPL0 (kernel)")}, {r.Qwords} qword(s) per page, {r.OrderWord} order" +
                           (r.Order == AccessOrder.Hotset ? $" ({Output.Count(r.PagesTouched)} pages touched)" : ""));
        var t = new Table().AddColumns("Phase", "Pages", "Time", "Pages/s", "Result");
        t.AddRow("write", Output.Count(r.Pages), Seconds(r.WriteTime), Output.Count(Rate(r.Pages, r.WriteTime)),
            $"{Output.Count(r.PagesWritten)} pages written, host check: {Output.Count(r.HostMismatches)} wrong");
        t.AddRow("verify", Output.Count(r.Pages), Seconds(r.VerifyTime), Output.Count(Rate(r.Pages, r.VerifyTime)),
            r.Mismatches == 0 ? "[green]0 mismatches[/]" : $"[red]{Output.Count(r.Mismatches)} mismatches[/]");
        console.Write(t);
        console.WriteLine($"pages: {r.Pages}, mismatches: {r.Mismatches}");
    }

    private static double Rate(ulong pages, TimeSpan t) => t > TimeSpan.Zero ? pages / t.TotalSeconds : 0;
    private static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.000 s", CultureInfo.InvariantCulture);
}
