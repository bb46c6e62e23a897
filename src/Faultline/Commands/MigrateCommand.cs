using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Faultline.Kvm.Memory;
using Faultline.Migration;
using Faultline.Migration.Reporting;
using Faultline.Migration.Security;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;

using static Faultline.Cli.Commands.MigrateOptions;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline migrate</c>: post-copy live migration of a running guest between two processes.
/// <list type="bullet">
/// <item><c>migrate</c> (this file): both ends on this machine, the source as a child process of the same faultline; prints a report.</item>
/// <item><c>migrate source --listen ADDR</c> (<see cref="MigrateSourceCommand"/>): runs the guest and serves destinations until one completes.</item>
/// <item><c>migrate dest --connect ADDR</c> (<see cref="MigrateDestCommand"/>): takes the guest over and reports.</item>
/// </list>
/// Their options are in <see cref="MigrateOptions"/>. All logic lives in Faultline.Migration; these files parse options
/// and render. Errors are typed exceptions.
/// </summary>
public static class MigrateCommand
{
    public static Command Create()
    {
        var vcpus = Vcpus(); var mem = Mem(); var engine = Engine(); var delay = Delay(); var json = Json(); var netns = Netns(); var run = PushRun(); var backing = BackingOption();
        var selfKick = SelfKick(); var bandwidth = PostcopyBandwidth(); var guestOptions = new GuestOptions(); var asyncPf = AsyncPfOption();
        var inject = Inject(); var recover = RecoverTimeout();
        var baselineOpt = new Option<bool>("--baseline")
        {
            Description = "First stream the same number of bytes over a plain loopback socket and report total time against it",
        };
        var security = new MigrateSecurity();
        var migrate = new Command("migrate", "Post-copy live migration of a running guest between two processes (both on this machine unless a subcommand says otherwise)")
        {
            vcpus, mem, engine, delay, json, netns, baselineOpt, run, backing, selfKick, bandwidth, asyncPf, inject, recover, MigrateSourceCommand.Create(), MigrateDestCommand.Create(),
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
            if (recovery.Inject.Has(InjectionKind.KillDestination)) throw new UsageException(KillDestUnderMigrate);
            // the baseline is the median of three streams: one stream's time swings 2x from run to run on this host
            double[]? raw = pr.GetValue(baselineOpt) ? [.. Enumerable.Range(0, 3).Select(_ => RawStream.Measure(bytes).TotalMilliseconds).Order()] : null;
            // the rule looks at the address the source will listen on: loopback, or the veth pair's (--netns)
            var sec = security.For(pr, MigrationAddress.Parse(pr.GetValue(netns) ? "10.200.0.2:0" : "127.0.0.1:0"), generate: true);
            return Task.FromResult(Local(pr.GetValue(vcpus), bytes, e, why, b, guest, apf, ParseDelay(pr.GetValue(delay)!),
                pr.GetValue(json), pr.GetValue(netns), new SourcePush(pr.GetValue(run), kick, pr.GetValue(bandwidth)), raw, recovery, sec, CliStreams.Of(pr, wall), ct));
        });
        return migrate;
    }

    private static int Local(int vcpus, ulong mem, PagingMode engine, string engineReason, Backing backing, GuestChoice guest, AsyncPfMode asyncPf, TimeSpan delay,
        OutputTarget? json, bool netns, SourcePush push, double[]? rawMs, Recovery recovery, PeerSecurity security, CliStreams io, CancellationToken ct)
    {
        GuestSizes.CheckSplit("--mem", mem, vcpus);
        new Faultline.Guest.MachineConfig(vcpus, mem).Validate();
        if (push.RunPages is < 1 or > Faultline.Migration.Protocol.Wire.MaxRunPages)
            throw new UsageException($"--push-run {push.RunPages}: use 1..{Faultline.Migration.Protocol.Wire.MaxRunPages}");
        var human = Output.Human(json, io.Stdout, io.Stderr);
        using var link = netns ? NetnsLink.Create() : null;
        var listenAddr = link is null ? "127.0.0.1:0" : $"{link.SourceIp}:0";
        var (file, prefix) = ThisProgram.Locate("the source");
        var sourceJson = Path.Combine(Path.GetTempPath(), $"faultline-source-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (link is not null) { psi.FileName = "ip"; psi.ArgumentList.Add("netns"); psi.ArgumentList.Add("exec"); psi.ArgumentList.Add(link.SourceNamespace); psi.ArgumentList.Add(file); }
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "migrate", "source", "--listen", listenAddr, "--vcpus", vcpus.ToString(CultureInfo.InvariantCulture),
                     "--mem", mem.ToString(CultureInfo.InvariantCulture), "--link-delay", $"{delay.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)}us",
                     "--push-run", push.RunPages.ToString(CultureInfo.InvariantCulture),
                     "--self-kick", $"{push.SelfKick.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)}us", "--json", sourceJson,
                     "--wait-dest", "0",   // this command's own destination is the only one: a lost one ends both
                     // a lost link is rejoined; the source waits longer than the destination tries, so the destination gives up first
                     "--rejoin-wait", (recovery.Timeout > TimeSpan.Zero ? (int)recovery.Timeout.TotalSeconds + 30 : 0).ToString(CultureInfo.InvariantCulture),
                     })
            psi.ArgumentList.Add(a);
        if (push.Bandwidth is { } bw) { psi.ArgumentList.Add("--max-postcopy-bandwidth"); psi.ArgumentList.Add(bw.Bytes.ToString(CultureInfo.InvariantCulture)); }
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
                var o = MigrateDestCommand.DestOptions(MigrationAddress.Parse(listenAddr), engine, backing, delay, link is null ? "loopback" : "veth (source in its own network namespace)", guest, asyncPf)
                    with
                    {
                        ExpectVcpus = vcpus, ExpectRamBytes = mem, EngineReason = engineReason, ResolveSource = Resolve,
                        Inject = recovery.Inject, RecoverTimeout = recovery.Timeout, KillSource = () => child.Kill(), Logger = new MigrateLog(io.Stderr), Security = security,
                    };
                return MigrateDestCommand.RunDestination(o, view, ct, () => resolved ?? o.Source);
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

    // ---- helpers ------------------------------------------------------------------------------------------------

    private static MigrationAddress WaitForListening(Process child, Task<string> stderr)
    {
        var line = child.StandardOutput.ReadLine();
        if (line is null || !line.StartsWith(MigrateSourceCommand.ListeningPrefix, StringComparison.Ordinal))
        {
            child.WaitForExit(TimeSpan.FromSeconds(10));
            throw new MigrationException($"source process failed: {LastLine(stderr) ?? line ?? "it exited without a word"}");
        }
        return MigrationAddress.Parse(line[MigrateSourceCommand.ListeningPrefix.Length..]);
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
}
