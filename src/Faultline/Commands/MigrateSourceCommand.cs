using System.CommandLine;
using System.Globalization;
using Faultline.Migration;
using Faultline.Migration.Security;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;

using static Faultline.Cli.Commands.MigrateOptions;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline migrate source --listen ADDR</c>: runs the guest and serves destinations until one completes. This
/// file parses its options and renders; all logic lives in <see cref="MigrationSource"/>.
/// </summary>
internal static class MigrateSourceCommand
{
    /// <summary>What the source prints once it is warm and listening; <c>migrate</c> reads its child's address from it.</summary>
    internal const string ListeningPrefix = "listening on ";

    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = "Address to listen on: HOST:PORT (port 0: any) or unix:PATH", Required = true };
        var vcpus = Vcpus(); var mem = Mem(); var delay = Delay(); var run = PushRun(); var selfKick = SelfKick(); var bandwidth = PostcopyBandwidth(); var json = Json(); var guestOptions = new GuestOptions();
        var waitDest = new Option<int>("--wait-dest")
        {
            Description = "Seconds to wait for a destination, and again for a new one after a destination is lost (the guest and every page are kept); 0: do not wait again",
            DefaultValueFactory = _ => 60, HelpName = "SECONDS",
        };
        var rejoin = RejoinWait();
        var security = new MigrateSecurity();
        var cmd = new Command("source", "Run a guest (a generation-stamped pattern, or the mixed workload), and migrate it to the first destination that connects and completes")
        {
            listen, vcpus, mem, delay, run, selfKick, bandwidth, json, waitDest, rejoin,
        };
        foreach (var opt in security.All.Concat(guestOptions.All)) cmd.Options.Add(opt);
        cmd.SetAction((pr, ct) =>
        {
            var wait = pr.GetValue(waitDest);
            if (wait is < 0 or > 86_400) throw new UsageException($"--wait-dest {wait}: use 0..86400 seconds");
            return Task.FromResult(Source(pr.GetValue(listen)!, pr.GetValue(vcpus), pr.GetValue(mem).Bytes,
                ParseDelay(pr.GetValue(delay)!), new SourcePush(pr.GetValue(run), ParseSelfKick(pr.GetValue(selfKick)!), pr.GetValue(bandwidth)), guestOptions.Of(pr),
                wait, Seconds(pr, rejoin), security.For(pr, MigrationAddress.Parse(pr.GetValue(listen)!), generate: false), pr.GetValue(json), CliStreams.Of(pr, null), ct));
        });
        return cmd;
    }

    private static int Source(string listen, int vcpus, ulong mem, TimeSpan delay, SourcePush push, GuestChoice guest, int waitDest,
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
            PostcopyBandwidth = (long)(push.Bandwidth?.Bytes ?? 0),
            LinkDelay = delay, PushRunPages = push.RunPages, SelfKickPeriod = push.SelfKick, RealTimeDemandPath = RealTimeSetting(), Order = guest.Order, Mixed = guest.Mixed,
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
}
