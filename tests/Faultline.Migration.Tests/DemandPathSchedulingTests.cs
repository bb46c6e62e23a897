using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Source;
using Faultline.Paging;
using Faultline.TestKit;
using Xunit.Abstractions;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>
/// The demand path under SCHED_FIFO where the kernel allows it, and its fallback to nice values where it does not:
/// refused by the kernel (a thread without CAP_SYS_NICE, as in a container), or turned off (the options; the CLI's FAULTLINE_RT=0). Every
/// case still migrates byte-exactly, and the report says which policy ran.
/// </summary>
public sealed class DemandPathSchedulingTests(ITestOutputHelper output) : IDisposable
{
    public void Dispose() => ThreadPriority.Choose(realTime: true);   // as a fresh process would pick

    /// <summary>The guest moved byte-exactly and both ends ran their demand path under <paramref name="policy"/>.</summary>
    private Reporting.DemandPathScheduling AssertMigrated(MigrationHarness.Outcome o, DemandPathPolicy policy)
    {
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        output.WriteLine(r.ToJson());
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal(o.SourceEnd.RamSha256(), r.SourceSha256);
        Assert.Equal((long)r.PagesTotal, r.EngineInstalled);
        Assert.Equal(policy, r.Scheduling.Destination);
        Assert.Equal(policy, r.Scheduling.Source);
        return r.Scheduling;
    }

    private static MigrationHarness.Outcome Migrate(PagingMode mode) =>
        MigrationHarness.Run(new SourceOptions(2, 8 * MiB) { WriteFraction = 0.75 }, a => new DestinationOptions(a, mode));

    [KvmFact]
    public void Where_the_kernel_allows_it_the_demand_path_runs_under_SCHED_FIFO_and_the_guest_never_does()
    {
        ThreadPriority.Choose(realTime: true);
        Skip.If(ThreadPriority.Policy != DemandPathPolicy.RealTime, $"this host refuses SCHED_FIFO ({ThreadPriority.PolicyDetail}): the fallback tests cover it");
        var o = Migrate(PagingMode.Exits);
        using var src = o.SourceEnd;
        var s = AssertMigrated(o, DemandPathPolicy.RealTime);
        Assert.StartsWith("SCHED_FIFO", s.Detail);
        Assert.Contains("fault paths wait at normal priority", s.Detail);
        Assert.True(o.Report!.FaultLatencyUs.Count > 0, "no vCPU fault exit: the demand path was not exercised");
    }

    [KvmFact]
    public void Turned_off_both_ends_run_the_demand_path_at_nice_values()
    {
        var o = MigrationHarness.Run(new SourceOptions(2, 8 * MiB) { WriteFraction = 0.75, RealTimeDemandPath = false },
            a => new DestinationOptions(a, PagingMode.Exits) { RealTimeDemandPath = false });
        using var src = o.SourceEnd;
        var s = AssertMigrated(o, DemandPathPolicy.Nice);
        Assert.Equal("nice -15: SCHED_FIFO turned off", s.Detail);
    }

    [Fact]
    public void A_process_the_kernel_refuses_SCHED_FIFO_picks_nice_values_at_its_probe()
    {
        ThreadCapabilities.RunWithout(ThreadCapabilities.CAP_SYS_NICE, () =>
        {
            ThreadPriority.Choose(realTime: true);
            Assert.Equal(DemandPathPolicy.Nice, ThreadPriority.Policy);
            Assert.Equal("nice -15: SCHED_FIFO refused: EPERM", ThreadPriority.PolicyDetail);
            // nice -15 needs the same capability: refused too, which only costs time (the thread stays where it was)
            Assert.False(ThreadPriority.JoinDemandPath());
            Assert.False(ThreadPriority.IsRealTime);
            ThreadPriority.LeaveDemandPath();
        });
    }

    [KvmTheory]
    [InlineData(PagingMode.Exits)]
    [InlineData(PagingMode.Missing)]
    public void Threads_the_kernel_refuses_SCHED_FIFO_at_run_time_fall_back_to_nice_and_the_guest_still_moves_intact(PagingMode mode)
    {
        ThreadPriority.Choose(realTime: true);   // probed with CAP_SYS_NICE: real time where the host allows it
        Skip.If(ThreadPriority.Policy != DemandPathPolicy.RealTime, $"this host refuses SCHED_FIFO already at the probe ({ThreadPriority.PolicyDetail})");
        MigrationHarness.Outcome? o = null;
        // both ends' threads are started from this thread, so none of them may raise itself
        ThreadCapabilities.RunWithout(ThreadCapabilities.CAP_SYS_NICE, () => o = Migrate(mode));
        using var src = o!.SourceEnd;
        var s = AssertMigrated(o, DemandPathPolicy.Nice);
        Assert.Equal("nice -15: SCHED_FIFO refused at run time: EPERM", s.Detail);
    }
}
