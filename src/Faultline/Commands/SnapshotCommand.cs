using System.CommandLine;
using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Selection;
using Faultline.Snapshot;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline snapshot save DIR</c> (run a guest, pause it, write a sparse snapshot) and <c>faultline snapshot restore
/// DIR</c> (start the VM at once, pages on first touch from the file, the rest filled in the background). All logic lives
/// in Faultline.Snapshot; this file parses options and renders (<see cref="SnapshotReportView"/>).
/// </summary>
internal static class SnapshotCommand
{
    public static Command Create() => new("snapshot", "Save a running guest to a sparse snapshot, and restore it lazily (pages fetched on first touch)")
    {
        SaveCommand(), RestoreCommand(), ServeCommand(),
    };

    private static Argument<string> Dir(string what) => new("DIR") { Description = what };

    private static Command SaveCommand()
    {
        var dir = Dir("New or empty directory to write the snapshot into");
        var vcpus = CliOptions.Int("--vcpus", "vCPUs of the guest", 2, min: 1, max: GuestLayout.MaxVcpus);
        var mem = GuestSizes.Ram("--mem", "Guest RAM, split evenly between the vCPUs (e.g. 256M, 2G)", 256 * ValueParsers.MiB);
        var workload = CliOptions.Workload("The generation program's page order: sequential, random or hotset");
        var used = CliOptions.Int("--used", "Percent of each vCPU's range the program works on; the rest stays zero (holes in the memory file)", 50, min: 1, max: 100);
        var passes = CliOptions.Int("--passes", "Whole passes every vCPU finishes before the pause (0: pause at once, part of pass 0 done)", 1, min: 0, max: 1000);
        var qwords = CliOptions.Int("--qwords", "Qwords written and verified per page", 1, min: 1, max: 512);
        var json = CliOptions.OutputFile("--json", "Also write the result as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var cmd = new Command("save", "Run the generation program on a guest, pause it and write vCPU state, a sparse memory file and a manifest")
        {
            dir, vcpus, mem, workload, used, passes, qwords, json,
        };
        cmd.SetAction(pr =>
        {
            var n = pr.GetValue(vcpus);
            var bytes = pr.GetValue(mem).Bytes;
            GuestSizes.CheckSplit("--mem", bytes, n);
            var perVcpu = bytes / (ulong)n;
            var usedBytes = Math.Max(GuestAddress.PageSize, perVcpu * (ulong)pr.GetValue(used) / 100 / GuestAddress.PageSize * GuestAddress.PageSize);
            var o = new SaveOptions(n, bytes, pr.GetValue(workload).Value, pr.GetValue(qwords)) { UsedBytesPerVcpu = usedBytes, Passes = pr.GetValue(passes), HugePages = Environment.GetEnvironmentVariable("FAULTLINE_SAVE_THP") != "0" };
            var r = SnapshotSaver.Save(pr.GetValue(dir)!, o);
            var j = pr.GetValue(json);
            j?.Write(pr.InvocationConfiguration.Output, SnapshotReportView.Json(r, pr.GetValue(dir)!));
            SnapshotReportView.Render(r, pr.GetValue(dir)!, Output.Console(Output.Human(j, pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error)));
            return 0;
        });
        return cmd;
    }

    private static Command RestoreCommand()
    {
        var dir = Dir("A snapshot directory written by snapshot save");
        var engine = new Option<string>("--engine")
        {
            Description = "Paging engine: auto (the fastest this host supports, with why), missing, minor (memfd page cache), exits, bitmap", DefaultValueFactory = _ => "auto",
        };
        var noFill = new Option<bool>("--no-fill") { Description = "No background fill: only the pages the guest touches are read" };
        var noReplay = new Option<bool>("--no-replay") { Description = "Do not prefetch the recorded working set first" };
        var noRecord = new Option<bool>("--no-record") { Description = "Do not record this restore's first touches (recorded when the snapshot has none yet)" };
        var noEager = new Option<bool>("--no-eager") { Description = "Skip the eager restore (read everything, then start) that the report compares against" };
        var handler = new Option<string?>("--handler") { Description = "Have the page handler listening on this Unix socket (snapshot serve, or any handler of Firecracker's protocol) serve the pages; if it dies, the VM is stopped with one error (or see --handler-restart)" };
        var handlerRestart = CliOptions.Int("--handler-restart", "With --handler: when the handler dies, start a new one (snapshot serve, this program) and go on, up to N times; the handlers this restore starts end with it (0: stop the VM with one error)", 0, min: 0, max: 100);
        var handlerTimeout = CliOptions.Int("--handler-timeout", "With --handler: seconds one vCPU may wait for one page before the handler counts as stalled (then as if it died: the VM stopped, or a restart)", 10, min: 1, max: 3600);
        var count = CliOptions.Int("--count", "After the single restore, restore this many VMs from the snapshot at once (sharing the file's page cache) and report them", 1, min: 1, max: 64);
        var json = CliOptions.OutputFile("--json", "Also write the report as JSON to FILE; - (or --json alone): to stdout, the table then to stderr");
        var cmd = new Command("restore", "Restore a snapshot lazily: the VM starts at once, pages come from the file on first touch, the rest in the background")
        {
            dir, engine, noFill, noReplay, noRecord, noEager, count, handler, handlerRestart, handlerTimeout, json,
        };
        cmd.SetAction(pr =>
        {
            var start = Stopwatch.GetTimestamp();   // first_instruction_ms counts from here
            var path = pr.GetValue(dir)!;
            if (pr.GetValue(handler) is { } socket)
            {
                var err = pr.InvocationConfiguration.Error;
                var restart = pr.GetValue(handlerRestart) is > 0 and var n ? RestartWith(n, err) : null;
                var viaHandler = HandlerRestore.Restore(path, socket, new RestoreOptions(PagingMode.Missing)
                {
                    StartTimestamp = start, HandlerTimeout = TimeSpan.FromSeconds(pr.GetValue(handlerTimeout)),
                }, restart);
                var jh = pr.GetValue(json);
                jh?.Write(pr.InvocationConfiguration.Output, SnapshotReportView.Json(viaHandler, $"pages from the handler at {socket}", null, null));
                SnapshotReportView.Render(viaHandler, $"pages from the handler at {socket}", null, null,
                    Output.Console(Output.Human(jh, pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error)));
                return 0;
            }
            if (pr.GetValue(handlerRestart) > 0) throw new UsageException("--handler-restart needs --handler PATH");
            if (pr.GetResult(handlerTimeout) is { Implicit: false }) throw new UsageException("--handler-timeout needs --handler PATH");
            var word = pr.GetValue(engine)!.Trim();
            var o = new RestoreOptions(word.Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : MigrateOptions.ParseEngine(word))
            {
                Fill = !pr.GetValue(noFill), Replay = !pr.GetValue(noReplay), Record = !pr.GetValue(noRecord), StartTimestamp = start,
            };
            var j = pr.GetValue(json);
            var human = Output.Human(j, pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error);
            var lazy = WithProgress(human, p => SnapshotRestorer.Restore(path, o, p));
            RestoreReport? eager = null;
            if (!pr.GetValue(noEager))
                eager = SnapshotRestorer.Restore(path, new RestoreOptions(PagingMode.None) { Fill = false, Replay = false, Record = false });
            var many = pr.GetValue(count) > 1 ? ManyRestores.Run(path, o with { Engine = lazy.Engine }, pr.GetValue(count)) : null;
            j?.Write(pr.InvocationConfiguration.Output, SnapshotReportView.Json(lazy, lazy.EngineReason, eager, many));
            SnapshotReportView.Render(lazy, lazy.EngineReason, eager, many, Output.Console(human));
            return 0;
        });
        return cmd;
    }

    private static Command ServeCommand()
    {
        var dir = Dir("A snapshot directory written by snapshot save");
        var socket = new Option<string>("--socket") { Description = "Unix socket to listen on (a new path): VMMs connect and send their regions JSON with the userfaultfd, as Firecracker does", Required = true };
        // a handler that restore --handler-restart started: it ends when its parent does (the pipe on stdin closes)
        var withStdin = new Option<bool>("--exit-with-stdin") { Description = "Stop when stdin reaches its end (as on Ctrl-C)", Hidden = true };
        var cmd = new Command("serve", "Serve a snapshot's pages to VMMs from this process (Firecracker's page-handler protocol) until interrupted; many VMMs (restores in other processes) may share it")
        {
            dir, socket, withStdin,
        };
        cmd.SetAction((pr, ct) =>
        {
            var err = pr.InvocationConfiguration.Error;
            using var snap = OpenedSnapshot.Open(pr.GetValue(dir)!);
            using var server = new SnapshotServer(snap, pr.GetValue(socket)!, line => { lock (err) { err.WriteLine($"faultline serve: {line}"); err.Flush(); } });
            server.Start();
            err.WriteLine($"faultline serve: serving {snap.Files.Directory} on {pr.GetValue(socket)} (Ctrl-C stops)");
            err.Flush();
            var stop = Task.Delay(Timeout.Infinite, ct).ContinueWith(_ => { }, TaskScheduler.Default);
            var eof = pr.GetValue(withStdin) ? Task.Run(() => Console.OpenStandardInput().CopyTo(Stream.Null), CancellationToken.None) : null;
            Task.WaitAny(eof is null ? [stop] : [stop, eof]);
            pr.InvocationConfiguration.Output.WriteLine($"served {server.Connections} connection(s): {server.PagesServed} pages read, {server.ZeroPagesServed} zero pages, {server.Refused} refused");
            pr.InvocationConfiguration.Output.Flush();
            return Task.FromResult(0);
        });
        return cmd;
    }

    /// <summary>--handler-restart N: this program started again as <c>snapshot serve</c>; one stderr line per restart.</summary>
    private static HandlerRestart RestartWith(int attempts, TextWriter err)
    {
        var (file, prefix) = ThisProgram.Locate("a page handler");
        return new HandlerRestart(attempts, file, prefix) { Log = line => { lock (err) { err.WriteLine($"faultline restore: {line}"); err.Flush(); } } };
    }

    /// <summary>A progress bar over the pages present while the restore runs (terminal only).</summary>
    private static RestoreReport WithProgress(TextWriter human, Func<Action<RestoreProgress>?, RestoreReport> body)
    {
        if (!Output.CanShowProgress(human)) return body(null);
        RestoreReport result = null!;
        Output.Console(human).Progress().AutoClear(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("restoring", maxValue: 1);
                result = body(p =>
                {
                    task.MaxValue = Math.Max(1, p.Pages);
                    task.Value = p.Present;
                    task.Description = $"resident {p.Present}/{p.Pages} pages, {p.Demanded} on demand";
                });
            });
        return result;
    }
}
