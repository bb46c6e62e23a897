using System.CommandLine;
using System.Globalization;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline run --vcpus N --mem SIZE [--guest-mode user|kernel] [--backing anon|shmem] [--qwords N] [--json [FILE|-]]</c>:
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
        var json = CliOptions.OutputFile("--json", "Write the result as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var command = new Command("run", "Run the Write then Verify workloads on a generated guest and report pages and mismatches")
        {
            vcpus, mem, mode, backing, qwords, json,
        };
        command.SetAction(pr =>
        {
            GuestSizes.CheckSplit("--mem", pr.GetValue(mem), pr.GetValue(vcpus));
            return Execute(
                new MachineConfig(pr.GetValue(vcpus), pr.GetValue(mem).Bytes, pr.GetValue(backing).Value), pr.GetValue(mode).Value, pr.GetValue(qwords),
                pr.GetValue(json), pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error);
        });
        return command;
    }

    private static int Execute(MachineConfig config, PrivilegeLevel level, int qwords, OutputTarget? json, TextWriter stdout, TextWriter stderr)
    {
        using var m = GuestMachine.Create(config);   // MachineConfig.Validate: a size that does not split → UsageException (exit 2)
        var write = m.Run(Workload.Write, i => m.ArgsFor(i, Seed, qwords), level).ThrowIfFailed();
        var hostMismatches = HostCheck(m, qwords);
        var verify = m.Run(Workload.Verify, i => m.ArgsFor(i, Seed, qwords), level).ThrowIfFailed();
        var result = new RunResult(config, level, qwords, m.Ram.PageCount, write.TotalResult, verify.TotalResult, hostMismatches, write.Elapsed, verify.Elapsed);

        json?.Write(stdout, Json(result));
        Render(result, Output.Console(Output.Human(json, stdout, stderr)));
        if (result.PagesWritten != result.Pages)
            throw new GuestException($"the guest wrote {result.PagesWritten} pages of {result.Pages}");
        if (result.Mismatches != 0 || result.HostMismatches != 0)
            throw new GuestException($"verify found {result.Mismatches} mismatching qwords in the guest and {result.HostMismatches} on the host");
        return 0;
    }

    /// <summary>The host reads back every qword the guest wrote.</summary>
    private static ulong HostCheck(GuestMachine m, int qwords)
    {
        ulong wrong = 0;
        for (var page = m.Ram.Base.Value; page < m.Ram.End.Value; page += GuestAddress.PageSize)
            for (var q = 0UL; q < (ulong)qwords; q++)
            {
                var gpa = new GuestAddress(page + q * 8);
                if (m.Ram.Qword(gpa) != gpa.Value + Seed) wrong++;
            }
        return wrong;
    }

    private sealed record RunResult(
        MachineConfig Config, PrivilegeLevel Level, int Qwords, ulong Pages, ulong PagesWritten, ulong Mismatches, ulong HostMismatches,
        TimeSpan WriteTime, TimeSpan VerifyTime)
    {
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
        w.WriteNumber("pages", r.Pages);
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
                           $"workloads at {(r.Level == PrivilegeLevel.User ? "CPL3 (user)" : "CPL0 (kernel)")}, {r.Qwords} qword(s) per page");
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
