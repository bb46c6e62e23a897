using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.TestKit;
using Xunit.Abstractions;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>
/// The source's pause and its self-kick timers: armed by each vCPU thread while a pause is imminent (Layout sent →
/// pause), disarmed when the window closes without a pause, deleted when the vCPUs park; the source reports how each
/// vCPU left KVM_RUN. Speed is measured by <c>faultline migrate</c> (docs/migration.md), not asserted here.
/// </summary>
public sealed class SourcePauseTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);   // generous: only a hang fails

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(sw.Elapsed < Bound, $"{what}: not within {Bound.TotalSeconds} s");
            Thread.Sleep(1);
        }
    }

    private static long[] SelfKicks(GuestMachine m) => m.Vcpus.Select(v => v.SelfKicksDelivered).ToArray();

    private static void AssertWellFormed(SourcePauseStats p, int vcpus, double pauseMs)
    {
        Assert.Equal(vcpus, p.VcpuStopMs.Length);
        Assert.Equal(vcpus, p.StoppedBy.Length);
        Assert.All(p.StoppedBy, c => Assert.True(Enum.IsDefined(c)));
        for (var i = 0; i < vcpus; i++)
        {
            Assert.InRange(p.VcpuStopMs[i], 0, p.VcpuParkedMs[i]);   // out of KVM_RUN, then its state captured
            Assert.InRange(p.VcpuParkedMs[i], 0, pauseMs);           // before the pausing thread saw every vCPU parked
        }
    }

    [KvmFact]
    public void The_vcpu_threads_arm_their_timers_while_a_pause_is_imminent_disarm_them_when_it_is_called_off_and_delete_them_when_they_park()
    {
        var baseline = ProcessResources.CountPosixTimers();
        using var m = GuestMachine.Create(new MachineConfig(2, 4 * MiB));
        var g = new SourceGuest(m, 512, m.BytesPerVcpu, TimeSpan.FromMicroseconds(250), AccessOrder.Sequential);
        try
        {
            g.Start();
            g.WaitForPasses(1, Bound, default);
            Assert.Equal(baseline + 2, ProcessResources.CountPosixTimers());   // one per vCPU thread, created disarmed
            Assert.Equal(0, g.ArmedTimers);
            Assert.Equal(new long[] { 0, 0 }, SelfKicks(m));

            g.OpenPauseWindow();
            WaitUntil(() => g.ArmedTimers == 2, "the vCPU threads arming their timers");
            WaitUntil(() => SelfKicks(m).All(k => k > 0), "every vCPU interrupted by its own timer");

            g.ClosePauseWindow();   // no pause after all (the destination failed before Ready)
            WaitUntil(() => g.ArmedTimers == 0, "the vCPU threads disarming their timers");
            var called = SelfKicks(m);
            Thread.Sleep(30);       // 120 periods
            Assert.Equal(called, SelfKicks(m));

            g.OpenPauseWindow();
            WaitUntil(() => g.ArmedTimers == 2, "the vCPU threads arming their timers again");
            var sw = Stopwatch.StartNew();
            var sentBy = new List<(string? Thread, int States)>();
            var states = g.Pause(Bound, s => sentBy.Add((Thread.CurrentThread.Name, s.Length)));
            var pauseMs = sw.Elapsed.TotalMilliseconds;
            var p = g.PauseStats();
            output.WriteLine($"stop ms {string.Join(", ", p.VcpuStopMs)} by {string.Join(", ", p.StoppedBy)}; self-kicks {string.Join(", ", p.SelfKicks)} in {string.Join(", ", p.ArmedMs)} ms armed");

            Assert.Equal(2, states.Length);
            // the state went out from the last vCPU thread to park (already on a CPU), once, with every vCPU's state
            var sent = Assert.Single(sentBy);
            Assert.StartsWith("fl-vcpu", sent.Thread);
            Assert.Equal(2, sent.States);
            // a second pause (a retry after a failed attempt) finds them parked and hands their state on at once
            Assert.Equal(states, g.Pause(Bound, s => sentBy.Add((Thread.CurrentThread.Name, s.Length))));
            Assert.Equal(2, sentBy.Count);
            Assert.Equal(Thread.CurrentThread.Name, sentBy[1].Thread);
            Assert.Equal(0, g.ArmedTimers);
            Assert.Equal(250, p.SelfKickPeriodUs);
            AssertWellFormed(p, 2, pauseMs);
            Assert.All(p.ArmedMs, a => Assert.True(a > 0));
            Assert.Equal(SelfKicks(m), p.SelfKicks);
            Assert.True(p.WindowMs > 0);
            WaitUntil(() => ProcessResources.CountPosixTimers() == baseline, "the parked vCPU threads deleting their timers");
        }
        finally
        {
            g.Dispose();
        }
        Assert.Equal(baseline, ProcessResources.CountPosixTimers());
    }

    [KvmFact]
    public void A_migration_reports_how_each_source_vcpu_left_kvm_run_and_leaves_no_timer_behind()
    {
        var baseline = ProcessResources.CountPosixTimers();
        var src = MigrationSource.Create(new SourceOptions(2, 16 * MiB) { WriteFraction = 0.75 });
        src.WaitUntilWarm();
        Assert.Equal(baseline + 2, ProcessResources.CountPosixTimers());
        var o = MigrationHarness.Run(src, a => new DestinationOptions(a, PagingMode.Exits));
        using var source = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        var s = o.Source!;
        output.WriteLine(s.ToJson());
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal(SourceOptions.DefaultSelfKickPeriod.TotalMicroseconds, s.Pause.SelfKickPeriodUs);
        AssertWellFormed(s.Pause, 2, s.PauseMs);
        Assert.True(s.Pause.WindowMs > 0);
        Assert.Contains("\"vcpu_stopped_by\"", s.ToJson());
        WaitUntil(() => ProcessResources.CountPosixTimers() == baseline, "the parked vCPU threads deleting their timers");
    }

    [KvmFact]
    public void Without_a_self_kick_period_the_source_creates_no_timer_and_its_vcpus_stop_by_the_kick()
    {
        var baseline = ProcessResources.CountPosixTimers();
        var src = MigrationSource.Create(new SourceOptions(2, 16 * MiB) { WriteFraction = 0.75, SelfKickPeriod = TimeSpan.Zero });
        src.WaitUntilWarm();
        Assert.Equal(baseline, ProcessResources.CountPosixTimers());
        var o = MigrationHarness.Run(src, a => new DestinationOptions(a, PagingMode.Exits));
        using var source = o.SourceEnd;
        Assert.Null(o.DestinationError);
        var s = o.Source!;
        Assert.Equal(0UL, o.Report!.GuestMismatches);
        Assert.Equal(0, s.Pause.SelfKickPeriodUs);
        Assert.All(s.Pause.SelfKicks, k => Assert.Equal(0, k));
        Assert.All(s.Pause.StoppedBy, c => Assert.True(c is VcpuStopCause.Kick or VcpuStopCause.Exit, c.ToString()));
        Assert.Equal(0, s.Pause.WindowMs);
        AssertWellFormed(s.Pause, 2, s.PauseMs);
    }

    [KvmFact]
    public void A_destination_lost_before_ready_closes_the_pause_window_and_the_same_source_migrates_again()
    {
        var armedWhenLost = -1;
        var src = MigrationSource.Create(new SourceOptions(2, 16 * MiB) { WriteFraction = 0.75 });
        var o = MigrationHarness.Run(src, a => new DestinationOptions(a, PagingMode.Exits)
        {
            // the destination's main channel: instead of Ready, wait for the source's timers to be armed, then cut the link
            WrapChannel = (c, role) => role == ChannelRole.Main ? new LostBeforeReady(c, () =>
            {
                WaitUntil(() => src.SelfKickTimersArmed == 2, "the source's vCPU threads arming their timers");
                armedWhenLost = src.SelfKickTimersArmed;
            }) : c,
        });
        using var source = o.SourceEnd;
        Assert.Equal(2, armedWhenLost);
        Assert.IsAssignableFrom<MigrationException>(o.SourceError);
        Assert.IsAssignableFrom<MigrationException>(o.DestinationError);
        Assert.False(source.Paused);
        WaitUntil(() => source.SelfKickTimersArmed == 0, "the source's vCPU threads disarming their timers");
        var called = SelfKicks(source.Machine);
        Thread.Sleep(30);
        Assert.Equal(called, SelfKicks(source.Machine));

        var again = MigrationHarness.Run(source, a => new DestinationOptions(a, PagingMode.Exits));
        Assert.Null(again.DestinationError);
        Assert.Null(again.SourceError);
        Assert.Equal(0UL, again.Report!.GuestMismatches);
        Assert.Equal(again.Report.SourceSha256, again.Report.ReceivedSha256);
        AssertWellFormed(again.Source!.Pause, 2, again.Source.PauseMs);
    }

    /// <summary>A destination's main channel that, when Ready is about to go out, runs <paramref name="before"/> and cuts the link instead.</summary>
    private sealed class LostBeforeReady(IByteChannel inner, Action before) : IByteChannel
    {
        public TimeSpan? ReceiveTimeout { get => inner.ReceiveTimeout; set => inner.ReceiveTimeout = value; }
        public long BytesSent => inner.BytesSent;
        public long BytesReceived => inner.BytesReceived;
        public string Peer => inner.Peer;

        public void Send(ReadOnlySpan<byte> data)
        {
            if (data.Length >= Wire.HeaderSize && data[2] == (byte)FrameType.Ready)
            {
                before();
                inner.Shutdown();
                throw new MigrationException("test: link lost before Ready");
            }
            inner.Send(data);
        }

        public int Receive(Span<byte> buffer) => inner.Receive(buffer);
        public void Shutdown() => inner.Shutdown();
        public void Dispose() => inner.Dispose();
    }
}
