using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Reporting;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;
using Faultline.Migration.Security;
using Faultline.Migration;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;
using Spectre.Console;
using Faultline.Paging.Selection;
using Faultline.Guest;

using static Faultline.Cli.Commands.MigrateOptions;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline migrate</c>: post-copy live migration of a running guest between two processes.
/// <list type="bullet">
/// <item><c>migrate</c>: both ends on this machine, the source as a child process of the same faultline; prints a report.</item>
/// <item><c>migrate source --listen ADDR</c>: runs the guest and serves one destination.</item>
/// <item><c>migrate dest --connect ADDR</c>: takes the guest over and reports.</item>
/// </list>
/// All logic lives in Faultline.Migration; this file parses options and renders. Errors are typed exceptions.
/// </summary>
public static class MigrateCommand
{
    private const string ListeningPrefix = "listening on ";

    public static Command Create()
    {
        var vcpus = Vcpus(); var mem = Mem(); var engine = Engine(); var delay = Delay(); var json = Json(); var netns = Netns(); var run = PushRun(); var backing = BackingOption();
        var selfKick = SelfKick(); var guestOptions = new GuestOptions(); var asyncPf = AsyncPfOption();
        var inject = Inject(); var recover = RecoverTimeout();
        var baselineOpt = new Option<bool>("--baseline")
        {
            Description = "First stream the same number of bytes over a plain loopback socket and report total time against it",
        };
        var security = new MigrateSecurity();
        var migrate = new Command("migrate", "Post-copy live migration of a running guest between two processes (both on this machine unless a subcommand says otherwise)")
        {
            vcpus, mem, engine, delay, json, netns, baselineOpt, run, backing, selfKick, asyncPf, inject, recover, SourceCommand(), DestCommand(),
        };
        foreach (var opt in security.All.Concat(guestOptions.All)) migrate.Options.Add(opt);
        migrate.SetAction((pr, ct) =>
        {
            var wall = Stopwatch.StartNew();   // the user's wait, from the command's start to its report
            var bytes = pr.GetValue(mem).Bytes;
            var (e, why) = ChooseEngine(pr.GetValue(engine)!, pr.GetValue(backing));
            var b = BackingFor(e, pr.GetValue(backing));
            var kick = ParseSelfKick(pr.GetValue(selfKick)!);
            var guest = guestOptions.Of(pr);
            var apf = AsyncPfModeOf(pr, asyncPf, e, guest.Mixed);
            var recovery = new Recovery(InjectOf(pr, inject), Seconds(pr, recover));
            // the baseline is the median of three streams: one stream's time swings 2x from run to run on this host
            double[]? raw = pr.GetValue(baselineOpt) ? [.. Enumerable.Range(0, 3).Select(_ => RawStream.Measure(bytes).TotalMilliseconds).Order()] : null;
            // the rule looks at the address the source will listen on: loopback, or the veth pair's (--netns)
            var sec = security.For(pr, MigrationAddress.Parse(pr.GetValue(netns) ? "10.200.0.2:0" : "127.0.0.1:0"), generate: true);
            return Task.FromResult(Local(pr.GetValue(vcpus), bytes, e, why, b, guest, apf, ParseDelay(pr.GetValue(delay)!),
                pr.GetValue(json), pr.GetValue(netns), pr.GetValue(run), kick, raw, recovery, sec, Streams(pr, wall), ct));
        });
        return migrate;
    }

    private static Command SourceCommand()
    {
        var listen = new Option<string>("--listen") { Description = "Address to listen on: HOST:PORT (port 0: any) or unix:PATH", Required = true };
        var vcpus = Vcpus(); var mem = Mem(); var delay = Delay(); var run = PushRun(); var selfKick = SelfKick(); var json = Json(); var guestOptions = new GuestOptions();
        var waitDest = new Option<int>("--wait-dest")
        {
            Description = "Seconds to wait for a destination, and again for a new one after a destination is lost (the guest and every page are kept); 0: do not wait again",
            DefaultValueFactory = _ => 60, HelpName = "SECONDS",
        };
        var rejoin = RejoinWait();
        var security = new MigrateSecurity();
        var cmd = new Command("source", "Run a guest (a generation-stamped pattern, or the mixed workload), and migrate it to the first destination that connects and completes")
        {
            listen, vcpus, mem, delay, run, selfKick, json, waitDest, rejoin,
        };
        foreach (var opt in security.All.Concat(guestOptions.All)) cmd.Options.Add(opt);
        cmd.SetAction((pr, ct) =>
        {
            var wait = pr.GetValue(waitDest);
            if (wait is < 0 or > 86_400) throw new UsageException($"--wait-dest {wait}: use 0..86400 seconds");
            return Task.FromResult(Source(pr.GetValue(listen)!, pr.GetValue(vcpus), pr.GetValue(mem).Bytes,
                ParseDelay(pr.GetValue(delay)!), pr.GetValue(run), ParseSelfKick(pr.GetValue(selfKick)!), guestOptions.Of(pr),
                wait, Seconds(pr, rejoin), security.For(pr, MigrationAddress.Parse(pr.GetValue(listen)!), generate: false), pr.GetValue(json), Streams(pr, null), ct));
        });
        return cmd;
    }

    private static Command DestCommand()
    {
        var connect = new Option<string>("--connect") { Description = "Address of the source: HOST:PORT or unix:PATH", Required = true };
        var engine = Engine(); var delay = Delay(); var json = Json(); var backing = BackingOption();
        var guestOptions = new GuestOptions(); var asyncPf = AsyncPfOption(); var inject = Inject(); var recover = RecoverTimeout();
        var vcpus = new Option<int?>("--vcpus") { Description = "The guest's vCPUs, if known: with --mem, the destination builds its VM before it connects (QEMU's -incoming); a source of another shape is refused" };
        var mem = GuestSizes.OptionalRam("--mem", "The guest's RAM, if known (see --vcpus)");
        var security = new MigrateSecurity();
        var cmd = new Command("dest", "Take over a guest from a source: resume it at once, fetch pages on demand while the rest is pushed")
        {
            connect, engine, delay, json, backing, vcpus, mem, asyncPf, inject, recover,
        };
        foreach (var opt in security.All.Concat(guestOptions.All)) cmd.Options.Add(opt);
        cmd.SetAction((pr, ct) =>
        {
            var io = Streams(pr, Stopwatch.StartNew());
            var (e, why) = ChooseEngine(pr.GetValue(engine)!, pr.GetValue(backing));
            var address = MigrationAddress.Parse(pr.GetValue(connect)!);
            var guest = guestOptions.Of(pr);
            var o = DestOptions(address, e, BackingFor(e, pr.GetValue(backing)), ParseDelay(pr.GetValue(delay)!), address.IsUnix ? "unix" : "tcp", guest,
                AsyncPfModeOf(pr, asyncPf, e, guest.Mixed)) with { EngineReason = why, Inject = InjectOf(pr, inject), RecoverTimeout = Seconds(pr, recover), Logger = new MigrateLog(io.Stderr), Security = security.For(pr, address, generate: false) };
            if (pr.GetValue(vcpus) is { } v) o = o with { ExpectVcpus = v };
            if (pr.GetValue(mem) is { } m) o = o with { ExpectRamBytes = m.Bytes };
            if (o.ExpectVcpus is { } ev && o.ExpectRamBytes is { } er)
            {
                GuestSizes.CheckSplit("--mem", er, ev);
                new Faultline.Guest.MachineConfig(ev, er).Validate();
            }
            NetworkErrors.CheckConnectable(address);
            var target = pr.GetValue(json);
            var human = Output.Human(target, io.Stdout, io.Stderr);
            var report = WithFailureJson(target, io, () => MigrationProgressView.Run(human, FirstDestinationPhase(o), view => RunDestination(o, view, ct)));
            target?.Write(io.Stdout, report.ToJson());
            MigrationReportTable.Render(report, null, human, io.Wall);
            return Task.FromResult(report.GuestMismatches == 0 && report.DigestsMatch ? 0 : 4);
        });
        return cmd;
    }

    // ---- the three actions --------------------------------------------------------------------------------------

    private static int Source(string listen, int vcpus, ulong mem, TimeSpan delay, int pushRun, TimeSpan selfKick, GuestChoice guest, int waitDest,
        TimeSpan rejoinWait, PeerSecurity security, OutputTarget? json, CliStreams io, CancellationToken ct)
    {
        GuestSizes.CheckSplit("--mem", mem, vcpus);
        new Faultline.Guest.MachineConfig(vcpus, mem).Validate();
        var address = MigrationAddress.Parse(listen);
        NetworkErrors.CheckListenable("--listen", address);
        var human = Output.Human(json, io.Stdout, io.Stderr);
        // the address is taken before the guest is built: a port in use fails at once; a destination that connects
        // meanwhile waits in the backlog until the source is warm ("listening on" is printed then)
        using var listener = Listen(address);
        using var source = MigrationSource.Create(new SourceOptions(vcpus, mem)
        {
            LinkDelay = delay, PushRunPages = pushRun, SelfKickPeriod = selfKick, RealTimeDemandPath = RealTimeSetting(), Order = guest.Order, Mixed = guest.Mixed,
            Trace = TraceSetting(), ThreadSlice = SliceSetting(), HugePages = Environment.GetEnvironmentVariable("FAULTLINE_SOURCE_THP") != "0",
            Logger = new MigrateLog(io.Stderr), Security = security, AcceptTimeout = TimeSpan.FromSeconds(waitDest > 0 ? waitDest : 60), RejoinTimeout = rejoinWait,
        });
        source.WaitUntilWarm(ct);
        human.WriteLine($"{ListeningPrefix}{listener.Address}");
        human.Flush();
        var r = ServeUntilComplete(source, listener, waitDest, io, ct);
        json?.Write(io.Stdout, r.ToJson());
        human.WriteLine(SourceLine(r));
        return 0;
    }

    /// <summary>
    /// Serves destinations until one completes: a destination lost before the pause leaves the guest running here, one
    /// lost after it leaves the paused guest and every page here (what it ran of the guest dies with it), and either
    /// way the next destination starts over from this guest; each wait for one is bounded by <paramref name="waitSeconds"/>.
    /// </summary>
    private static SourceResult ServeUntilComplete(MigrationSource source, MigrationListener listener, int waitSeconds, CliStreams io, CancellationToken ct)
    {
        while (true)
        {
            var accepted = source.DestinationsAccepted;
            try { return source.Serve(listener, ct); }
            catch (MigrationException e) when (waitSeconds > 0 && !ct.IsCancellationRequested && source.DestinationsAccepted > accepted)
            {
                io.Stderr.WriteLine($"faultline: destination lost: {ErrorReport.OneLine(e.Message)}; waiting up to {waitSeconds} s for another at {listener.Address}");
                io.Stderr.Flush();
            }
        }
    }

    private static MigrationListener Listen(MigrationAddress address)
    {
        try { return new MigrationListener(address); }
        catch (MigrationException e) when (NetworkErrors.ForListen(e, address) is { } words) { throw words; }
    }

    /// <summary>The source's one-line summary; its counters are the source's own (docs/counters.md).</summary>
    internal static string SourceLine(SourceResult r) => string.Create(CultureInfo.InvariantCulture,
        $"source: {r.PagesTotal} pages sent once each ({r.PagesDemand} sent first as demand replies, {r.PagesPushed} pushed, {r.PagesZero} zero), "
        + $"{r.DemandRequests} demand requests ({r.DemandAlreadySent} for pages already sent), "
        + $"paused in {r.PauseMs:0.000} ms ({DescribePause(r.Pause)}), state on the wire after {r.PauseToStateSentMs:0.000} ms, image digest {r.SourceSha256}");

    /// <summary>"vCPUs out after 0.012 (self_kick), 1.902 (kick) ms; self-kick timer every 500 µs: 1350 exits in 1000 ms armed, 1350/s"</summary>
    private static string DescribePause(SourcePauseStats p)
    {
        var vcpus = string.Join(", ", p.VcpuStopMs.Select((ms, i) => string.Create(CultureInfo.InvariantCulture, $"{ms:0.000} ({SourceResult.CauseName(p.StoppedBy[i])})")));
        var timer = p.SelfKickPeriodUs == 0
            ? "no self-kick timer"
            : string.Create(CultureInfo.InvariantCulture,
                $"self-kick timer every {p.SelfKickPeriodUs:0} µs: {p.SelfKicks.Sum()} exits in {p.ArmedMs.Sum():0} ms armed, {p.SelfKicksPerSecond:0}/s");
        return $"vCPUs out after {vcpus} ms; {timer}";
    }

    private static int Local(int vcpus, ulong mem, PagingMode engine, string engineReason, Backing backing, GuestChoice guest, AsyncPfMode asyncPf, TimeSpan delay,
        OutputTarget? json, bool netns, int pushRun, TimeSpan selfKick, double[]? rawMs, Recovery recovery, PeerSecurity security, CliStreams io, CancellationToken ct)
    {
        GuestSizes.CheckSplit("--mem", mem, vcpus);
        new Faultline.Guest.MachineConfig(vcpus, mem).Validate();
        if (pushRun is < 1 or > Faultline.Migration.Protocol.Wire.MaxRunPages)
            throw new UsageException($"--push-run {pushRun}: use 1..{Faultline.Migration.Protocol.Wire.MaxRunPages}");
        var human = Output.Human(json, io.Stdout, io.Stderr);
        using var link = netns ? NetnsLink.Create() : null;
        var listenAddr = link is null ? "127.0.0.1:0" : $"{link.SourceIp}:0";
        var (file, prefix) = Self();
        var sourceJson = Path.Combine(Path.GetTempPath(), $"faultline-source-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (link is not null) { psi.FileName = "ip"; psi.ArgumentList.Add("netns"); psi.ArgumentList.Add("exec"); psi.ArgumentList.Add(link.SourceNamespace); psi.ArgumentList.Add(file); }
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "migrate", "source", "--listen", listenAddr, "--vcpus", vcpus.ToString(CultureInfo.InvariantCulture),
                     "--mem", mem.ToString(CultureInfo.InvariantCulture), "--link-delay", $"{delay.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)}us",
                     "--push-run", pushRun.ToString(CultureInfo.InvariantCulture),
                     "--self-kick", $"{selfKick.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)}us", "--json", sourceJson,
                     "--wait-dest", "0",   // this command's own destination is the only one: a lost one ends both
                     // a lost link is rejoined; the source waits longer than the destination tries, so the destination gives up first
                     "--rejoin-wait", (recovery.Timeout > TimeSpan.Zero ? (int)recovery.Timeout.TotalSeconds + 30 : 0).ToString(CultureInfo.InvariantCulture),
                     })
            psi.ArgumentList.Add(a);
        foreach (var a in guest.Arguments()) psi.ArgumentList.Add(a);
        var keyFile = Path.Combine(Path.GetTempPath(), $"faultline-key-{Environment.ProcessId}-{Guid.NewGuid():N}");
        foreach (var a in MigrateSecurity.ChildArguments(security, keyFile)) psi.ArgumentList.Add(a);
        using var removeKey = new KeyFileRemoval(keyFile);
        using var child = Process.Start(psi) ?? throw new MigrationException($"cannot start the source process ({file})");
        using var cutShort = Interrupts.OnCutShort(() => child.Kill());   // one process (no tree walk: /proc is slow while memory is being populated)
        var stderr = child.StandardError.ReadToEndAsync(CancellationToken.None);
        // a source that dies is reported as such at once (not as the connection error it causes later)
        using var died = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // how the source ended, if it has within `wait` and not with 0: the one place its death is read from the process
        string? Death(TimeSpan wait) => child.WaitForExit(wait) && child.ExitCode != 0 ? DescribeExit(child.ExitCode) : null;
        child.EnableRaisingEvents = true;
        child.Exited += (_, _) => { if (Death(TimeSpan.Zero) is not null) died.Cancel(); };
        if (Death(TimeSpan.Zero) is not null) died.Cancel();   // it may have ended before the handler was there
        ct = died.Token;
        try
        {
            double startupMs = 0;
            MigrationAddress? resolved = null;
            var report = MigrationProgressView.Run(human,
                $"starting the source and preparing the destination ({vcpus} vCPU(s), {ValueParsers.DescribeSize(mem)} each: VM, guest memory, threads)", view =>
            {
                // the destination knows the guest's shape: it is prepared (VM, memory, threads) while the source process
                // starts, and asks for the source's address only when it is ready to connect
                MigrationAddress Resolve()
                {
                    var address = WaitForListening(child, stderr);
                    startupMs = io.Wall?.Elapsed.TotalMilliseconds ?? 0;
                    if (link is not null) address = MigrationAddress.Parse($"{link.SourceIp}:{address.Text[(address.Text.LastIndexOf(':') + 1)..]}");
                    view.Phase($"connecting to the source at {address}");
                    return resolved = address;
                }
                var o = DestOptions(MigrationAddress.Parse(listenAddr), engine, backing, delay, link is null ? "loopback" : "veth (source in its own network namespace)", guest, asyncPf)
                    with
                    {
                        ExpectVcpus = vcpus, ExpectRamBytes = mem, EngineReason = engineReason, ResolveSource = Resolve,
                        Inject = recovery.Inject, RecoverTimeout = recovery.Timeout, KillSource = () => child.Kill(), Logger = new MigrateLog(io.Stderr), Security = security,
                    };
                return RunDestination(o, view, ct, () => resolved ?? o.Source);
            });
            if (rawMs is { Length: > 0 } raw) report = report with { RawStreamMs = raw[raw.Length / 2], RawStreamSamplesMs = raw };
            string? sourceLine = null;
            for (string? line; (line = child.StandardOutput.ReadLine()) is not null;) sourceLine = line;
            if (!child.WaitForExit(TimeSpan.FromSeconds(60))) throw new MigrationException("the source process did not exit after the migration");
            if (child.ExitCode != 0) throw new MigrationException($"source process failed: {LastLine(stderr)}");
            if (File.Exists(sourceJson)) report = report with { SourceJson = File.ReadAllText(sourceJson).Trim() };
            if (io.Wall is { } wall) report = report with { Wall = WallTime.Of(wall.Elapsed.TotalMilliseconds, startupMs, report) };
            json?.Write(io.Stdout, report.ToJson());
            MigrationReportTable.Render(report, sourceLine, human, io.Wall);
            return report.GuestMismatches == 0 && report.DigestsMatch ? 0 : 4;
        }
        catch (Exception e) when (Death(TimeSpan.FromMilliseconds(300)) is { } death)
        {
            // the source died (its death may reach us first as the connection it closed, or as the rejoin it cancelled)
            var msg = $"the source process {death}{(LastLine(stderr, TimeSpan.FromMilliseconds(200)) is { } said ? $": {said}" : "")}";
            if (e is MigrationFailedException f)
            {
                var failure = f.Failure with { Cause = msg };
                json?.Write(io.Stdout, failure.ToJson());
                throw new MigrationFailedException(msg, failure, e);
            }
            throw new MigrationException(msg, e);
        }
        catch (Exception e) when (!child.HasExited)
        {
            // interrupted: the source goes at once; the destination failed: the source has been told (Abort) or has seen
            // the socket close; give it a moment to say why
            if (ct.IsCancellationRequested || !child.WaitForExit(TimeSpan.FromSeconds(10))) child.Kill(entireProcessTree: true);
            if (e is MigrationFailedException f) json?.Write(io.Stdout, f.Failure.ToJson());
            throw;
        }
        finally
        {
            File.Delete(sourceJson);
        }
    }

    /// <summary>--inject and --recover-timeout, as the destination takes them.</summary>
    private sealed record Recovery(InjectionPlan Inject, TimeSpan Timeout);

    /// <summary>Runs <paramref name="run"/>; a migration that failed writes its <c>failure</c> object where the report would have gone.</summary>
    private static MigrationReport WithFailureJson(OutputTarget? json, CliStreams io, Func<MigrationReport> run)
    {
        try { return run(); }
        catch (MigrationFailedException e) when (json is not null)
        {
            json.Write(io.Stdout, e.Failure.ToJson());
            throw;
        }
    }

    /// <summary>What the destination does first: prepares (told the guest's shape) or waits for the source to listen.</summary>
    private static string FirstDestinationPhase(DestinationOptions o) => o.Prepared
        ? $"preparing {ValueParsers.DescribeSize(o.ExpectRamBytes!.Value)} on the destination (VM, guest memory, vCPU threads), then connecting to {o.Source}"
        : $"waiting for the source at {o.Source} (up to {o.HandshakeTimeout.TotalSeconds:0} s for it to listen)";

    /// <summary>
    /// Runs the destination under <paramref name="view"/>: each connection's channel passes the view on its way in (the
    /// phase moves to the handshake), post-copy reports draw the bar. A connect that failed is said in the user's words.
    /// </summary>
    private static MigrationReport RunDestination(DestinationOptions o, MigrationProgressView view, CancellationToken ct, Func<MigrationAddress>? address = null)
    {
        var connected = 0;
        var source = o.Source;
        address ??= () => source;
        var prepared = o.Prepared;
        var inner = o.WrapChannel;
        o = o with
        {
            WrapChannel = (channel, role) =>
            {
                Interlocked.Increment(ref connected);
                view.Connected(role, address().Text, prepared);
                return inner is null ? channel : inner(channel, role);
            },
        };
        try
        {
            return new MigrationDestination(o).Run(view.IsDrawn ? new InlineProgress(view.Report) : null, ct);
        }
        catch (Exception e) when (Volatile.Read(ref connected) < 2 && NetworkErrors.ForConnect(e, address(), o.HandshakeTimeout) is { } words)
        {
            throw words;
        }
    }

    private static DestinationOptions DestOptions(MigrationAddress a, PagingMode engine, Backing backing, TimeSpan delay, string link, GuestChoice guest, AsyncPfMode asyncPf) =>
        new(a, engine, backing)
        {
            Workload = guest.Name, Mixed = guest.Mixed, AsyncPf = new AsyncPfOptions(asyncPf),
            LinkDelay = delay, LinkKind = link, RealTimeDemandPath = RealTimeSetting(), Trace = TraceSetting(), ThreadSlice = SliceSetting(),
            VcpuPostcopyNice = int.TryParse(Environment.GetEnvironmentVariable("FAULTLINE_VCPU_NICE"), out var nice) ? nice : DestinationOptions.DefaultVcpuPostcopyNice,
        };

    // ---- rendering ----------------------------------------------------------------------------------------------


    /// <summary>The invocation's stdout and stderr, and the wall clock started when the command began (null: not shown).</summary>
    private static CliStreams Streams(ParseResult pr, Stopwatch? wall) => new(pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error, wall);

    // ---- helpers ------------------------------------------------------------------------------------------------

    /// <summary>How to start this same faultline again: the apphost, or dotnet + the entry assembly.</summary>
    private static (string File, string[] Prefix) Self()
    {
        var process = Environment.ProcessPath ?? throw new MigrationException("cannot tell which program to start as the source");
        var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
        if (Path.GetFileNameWithoutExtension(process) == "dotnet" && !string.IsNullOrEmpty(entry)) return (process, [entry]);
        return (process, []);
    }

    private static MigrationAddress WaitForListening(Process child, Task<string> stderr)
    {
        var line = child.StandardOutput.ReadLine();
        if (line is null || !line.StartsWith(ListeningPrefix, StringComparison.Ordinal))
        {
            child.WaitForExit(TimeSpan.FromSeconds(10));
            throw new MigrationException($"source process failed: {LastLine(stderr) ?? line ?? "it exited without a word"}");
        }
        return MigrationAddress.Parse(line[ListeningPrefix.Length..]);
    }

    /// <summary>"exited with status 3", "was killed by signal 9 (SIGKILL)" (.NET reports a signal as 128 + its number).</summary>
    private static string DescribeExit(int code) => code switch
    {
        > 128 and < 160 => $"was killed by signal {code - 128}{(code - 128) switch { 9 => " (SIGKILL)", 15 => " (SIGTERM)", 2 => " (SIGINT)", 6 => " (SIGABRT)", 11 => " (SIGSEGV)", _ => "" }}",
        _ => $"exited with status {code}",
    };

    private static string? LastLine(Task<string> text, TimeSpan? wait = null)
    {
        if (!text.Wait(wait ?? TimeSpan.FromSeconds(5))) return null;
        var lines = text.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var last = lines.LastOrDefault(l => l.StartsWith("faultline:", StringComparison.Ordinal)) ?? lines.LastOrDefault();
        return last?.StartsWith("faultline: ", StringComparison.Ordinal) == true ? last["faultline: ".Length..] : last;
    }

    /// <summary>Deletes the key file handed to the child once the run ends, however it ends.</summary>
    private sealed class KeyFileRemoval(string path) : IDisposable
    {
        public void Dispose() => File.Delete(path);
    }

    private sealed class InlineProgress(Action<MigrationProgress> report) : IProgress<MigrationProgress>
    {
        public void Report(MigrationProgress value) => report(value);
    }
}
