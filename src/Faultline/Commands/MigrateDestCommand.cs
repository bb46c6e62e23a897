using System.CommandLine;
using System.Diagnostics;
using Faultline.Kvm.Memory;
using Faultline.Migration;
using Faultline.Migration.Destination;
using Faultline.Migration.Reporting;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;

using static Faultline.Cli.Commands.MigrateOptions;

namespace Faultline.Cli.Commands;

/// <summary>
/// <c>faultline migrate dest --connect ADDR</c>: takes the guest over and reports. Also the destination run that
/// <c>migrate</c> shares (<see cref="DestOptions"/>, <see cref="RunDestination"/>); all logic lives in
/// <see cref="MigrationDestination"/>.
/// </summary>
internal static class MigrateDestCommand
{
    public static Command Create()
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
            var io = CliStreams.Of(pr, Stopwatch.StartNew());
            var (e, why) = ChooseEngine(pr.GetValue(engine)!, pr.GetValue(backing));
            var address = MigrationAddress.Parse(pr.GetValue(connect)!);
            var guest = guestOptions.Of(pr);
            var o = DestOptions(address, e, BackingFor(e, pr.GetValue(backing)), ParseDelay(pr.GetValue(delay)!), address.IsUnix ? "unix" : "tcp", guest,
                AsyncPfModeOf(pr, asyncPf, e, guest.Mixed)) with
                {
                    EngineReason = why, Inject = InjectOf(pr, inject), RecoverTimeout = Seconds(pr, recover), KillDestination = KillThisProcess,
                    Logger = new MigrateLog(io.Stderr), Security = security.For(pr, address, generate: false),
                };
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

    /// <summary>
    /// <c>--inject kill-dest</c>: SIGKILL to this process (<see cref="Process.Kill()"/> on itself), a crash as a host
    /// failure would be: no finally block, no Abort frame, no report. The source sees only its connections end.
    /// </summary>
    private static void KillThisProcess()
    {
        using var self = Process.GetCurrentProcess();
        self.Kill();
        Thread.Sleep(Timeout.Infinite);   // the signal is on its way: nothing more of the migration runs on this thread
    }

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
    internal static MigrationReport RunDestination(DestinationOptions o, MigrationProgressView view, CancellationToken ct, Func<MigrationAddress>? address = null)
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

    /// <summary>The destination's options from the command line's words (both forms); the environment knobs are read here, in the CLI.</summary>
    internal static DestinationOptions DestOptions(MigrationAddress a, PagingMode engine, Backing backing, TimeSpan delay, string link, GuestChoice guest, AsyncPfMode asyncPf) =>
        new(a, engine, backing)
        {
            Workload = guest.Name, Mixed = guest.Mixed, AsyncPf = new AsyncPfOptions(asyncPf),
            LinkDelay = delay, LinkKind = link, RealTimeDemandPath = RealTimeSetting(), Trace = TraceSetting(), ThreadSlice = SliceSetting(),
            VcpuPostcopyNice = int.TryParse(Environment.GetEnvironmentVariable("FAULTLINE_VCPU_NICE"), out var nice) ? nice : DestinationOptions.DefaultVcpuPostcopyNice,
        };

    private sealed class InlineProgress(Action<MigrationProgress> report) : IProgress<MigrationProgress>
    {
        public void Report(MigrationProgress value) => report(value);
    }
}
