using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Reporting;
using Faultline.Migration.Source;
using Faultline.Paging;
using Faultline.TestKit;
using Xunit.Abstractions;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

public sealed class EndToEndMigrationTests(ITestOutputHelper output)
{
    public static TheoryData<PagingMode, Backing, int> EveryEngine()
    {
        var d = new TheoryData<PagingMode, Backing, int>();
        foreach (var v in new[] { 1, 2 })
        {
            d.Add(PagingMode.Exits, Backing.Anonymous, v);
            d.Add(PagingMode.Missing, Backing.Anonymous, v);
            d.Add(PagingMode.Bitmap, Backing.Anonymous, v);
            d.Add(PagingMode.Minor, Backing.Shmem, v);
            d.Add(PagingMode.Exits, Backing.Shmem, v);
        }
        return d;
    }

    [KvmTheory]
    [MemberData(nameof(EveryEngine))]
    public void A_running_guest_moves_with_every_page_installed_once_and_verified(PagingMode mode, Backing backing, int vcpus)
    {
        var o = MigrationHarness.Run(vcpus, 4 * MiB, mode, backing);
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        output.WriteLine(r.ToJson());
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal(src.RamSha256(), r.SourceSha256);              // the paused image is what the source still holds
        Assert.Equal((long)r.PagesTotal, r.EngineInstalled);        // every page installed exactly once
        Assert.Equal((long)r.PagesTotal, r.PagesDemand + r.PagesPushed);
        // a second copy only ever comes from resending a demanded page the push had in flight; it is dropped, not installed
        Assert.True(r.PagesDuplicate <= r.DemandAlreadyPushed, $"{r.PagesDuplicate} duplicates for {r.DemandAlreadyPushed} resends");
        Assert.True(r.PagesZero > 0, "the unwritten quarter of each range should travel as zero markers");
        Assert.Equal(r.PagesTotal, o.Source!.PagesDemand + o.Source.PagesPushed); // the source sent each page once (plus resends)
        // how faults waited: a fault can only have timed out in the tracker if it took its 50 ms timed wait; every vCPU's run-queue time was read
        Assert.InRange(r.FaultWaitsPastWaitTimer, 0, r.FaultLatencyUs.Count);
        Assert.Equal(r.FaultLatencyUs.Max >= MigrationReport.WaitTimerMs * 1000, r.FaultWaitsPastWaitTimer > 0);
        Assert.Equal(vcpus, r.VcpuRunQueueMs.Length);   // not its sign: over a post-copy of a few ms two reads may go back (MigrationReport)
        if (mode.HasReaders()) Assert.Null(r.WakeLatencyUs);
        else if (r.PagesToWaiters > 0)
        {
            // a page installed for a waiting vCPU: its wake lag is part of that fault's time, no longer than the longest fault
            Assert.InRange(r.WakeLatencyUs!.Count, 1, r.FaultLatencyUs.Count);
            Assert.True(r.WakeLatencyUs.Max <= r.FaultLatencyUs.Max, $"wake {r.WakeLatencyUs.Max} µs > fault {r.FaultLatencyUs.Max} µs");
        }
    }

    [KvmTheory]
    [InlineData(PagingMode.Exits, Backing.Anonymous)]
    [InlineData(PagingMode.Exits, Backing.Shmem)]
    [InlineData(PagingMode.Minor, Backing.Shmem)]
    public void A_prepared_destination_builds_before_it_connects_and_migrates_the_same(PagingMode mode, Backing backing)
    {
        var o = MigrationHarness.Run(new SourceOptions(2, 4 * MiB),
            a => new DestinationOptions(a, mode, backing) { ExpectVcpus = 2, ExpectRamBytes = 4 * MiB });
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        output.WriteLine(r.ToJson());
        Assert.NotNull(r.PrepareMs);                                 // built before connecting ...
        Assert.True(r.PrepareMs > 0);
        Assert.Contains("\"prepare_ms\"", r.ToJson());
        Assert.Equal(0UL, r.GuestMismatches);                         // ... and the migration is the same
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal(src.RamSha256(), r.SourceSha256);
        Assert.Equal((long)r.PagesTotal, r.EngineInstalled);
        // the transfer threads' own CPU time: what a page costs each end, apart from waiting for a CPU
        Assert.True(r.BulkReceiverCpuMs > 0, $"bulk receiver CPU {r.BulkReceiverCpuMs} ms");
        Assert.True(r.BulkReceiverCpuMs <= r.TotalMs + r.PrepareMs, $"bulk receiver CPU {r.BulkReceiverCpuMs} ms in a {r.TotalMs} ms migration");
        Assert.True(o.Source!.PushCpuMs > 0, $"push CPU {o.Source.PushCpuMs} ms");
        Assert.Contains("\"bulk_receiver_cpu_ms\"", r.ToJson());
        Assert.Contains("\"push_cpu_ms\"", o.Source.ToJson());
        // a fault path spins at least as long as most pages take to come back (within its bounds), then blocks
        Assert.InRange(r.WaitSpinUs, Paging.Engines.FaultWait.MinSpinUs, Paging.Engines.FaultWait.MaxSpinUs);
        Assert.True(r.WaitSpinUs >= Math.Min(r.LinkRttUs!.P90, Paging.Engines.FaultWait.MaxSpinUs), $"spin {r.WaitSpinUs} µs, round trip p90 {r.LinkRttUs.P90} µs");
    }

    [KvmFact]
    public void A_destination_built_after_the_layout_reports_no_prepare_time_and_a_baseline_shows_its_samples()
    {
        var o = MigrationHarness.Run(new SourceOptions(1, 2 * MiB), a => new DestinationOptions(a, PagingMode.Exits));
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.Report!.PrepareMs);
        Assert.DoesNotContain("prepare_ms", o.Report.ToJson());
        Assert.DoesNotContain("raw_stream_ms", o.Report.ToJson());

        var withBaseline = o.Report with { RawStreamMs = 20, RawStreamSamplesMs = [10, 20, 40] };
        using var json = System.Text.Json.JsonDocument.Parse(withBaseline.ToJson());
        var root = json.RootElement;
        Assert.Equal(20, root.GetProperty("raw_stream_ms").GetDouble());
        Assert.Equal([10.0, 20.0, 40.0], root.GetProperty("raw_stream_samples_ms").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Equal(Math.Round(o.Report.TotalMs / 20, 3), root.GetProperty("total_over_raw").GetDouble());
    }

    [KvmFact]
    public void A_bandwidth_cap_holds_the_push_to_its_rate_and_every_page_still_arrives_exactly()
    {
        const long Cap = 16 * (long)MiB;   // bytes per second: more than 8 MiB of pushed pages take at least 0.5 s under it (uncapped: tens of ms)
        var o = MigrationHarness.Run(new SourceOptions(1, 96 * MiB) { WriteFraction = 0.75, PostcopyBandwidth = Cap }, a => new DestinationOptions(a, PagingMode.Exits));
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal(Cap, o.Source!.PostcopyBandwidth);
        // the pages the push sent with data, at the cap, less the 1 ms the pacer may run ahead
        var pushedBytes = (double)(r.PagesPushed - r.PagesZero) * 4096;
        Assert.True(pushedBytes > 8 * MiB, $"only {r.PagesPushed} pages were pushed ({r.PagesZero} zero): the guest was demanded instead of pushed");
        Assert.True(r.PostcopyMs >= pushedBytes / Cap * 1000 - 2, $"post-copy {r.PostcopyMs:0.0} ms for {pushedBytes / MiB:0.0} MiB pushed: faster than the cap allows");
    }
}
