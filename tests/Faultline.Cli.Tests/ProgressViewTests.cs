using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;

namespace Faultline.Cli.Tests;

/// <summary>The migration's progress line names its phase and keeps the last fault latency measured (a clock passed in: no timing).</summary>
public sealed class ProgressViewTests
{
    private const long Hz = 1_000_000;

    [Fact]
    public void Post_copy_shows_pages_per_second_an_eta_and_the_last_measured_fault_latency()
    {
        var v = MigrationProgressView.Detached();
        var first = v.Describe(new MigrationProgress("post-copy", 1000, 16384, 10, 990, 0), nowTicks: 1 * Hz, Hz);
        Assert.Equal("post-copy: 1000/16384 pages (10 on demand, 990 pushed), — pages/s, ETA —, last fault —", first);   // no fault yet

        var second = v.Describe(new MigrationProgress("post-copy", 3000, 16384, 30, 2970, 52.4), nowTicks: Hz + Hz / 2, Hz);
        Assert.Equal("post-copy: 3000/16384 pages (30 on demand, 2970 pushed), 4,000 pages/s, ETA 3.3 s, last fault 52 µs", second);

        // the library reports 0 when no fault was timed since: the last measured one stays on the line
        var third = v.Describe(new MigrationProgress("post-copy", 7000, 16384, 31, 6969, 0), nowTicks: 2 * Hz + Hz / 2, Hz);
        Assert.EndsWith("4,000 pages/s, ETA 2.3 s, last fault 52 µs", third);

        // and so does the final report, whose latency is always 0, as the destination verifies
        var done = v.Describe(new MigrationProgress("complete", 16384, 16384, 31, 16353, 0), nowTicks: 3 * Hz, Hz);
        Assert.Equal("verifying: every page present (16384 pages); the guest checks its memory, digests compared; last fault 52 µs", done);
    }

    [Fact]
    public void Phases_before_post_copy_name_what_is_happening()
    {
        var v = MigrationProgressView.Detached();
        v.Phase("preparing 256 MiB on the destination (VM, guest memory, vCPU threads), then connecting to 127.0.0.1:4000");
        Assert.StartsWith("preparing 256 MiB", v.Text);
        v.Connected(ChannelRole.Main, "127.0.0.1:4000", prepared: true);
        Assert.Equal("connected to the source at 127.0.0.1:4000: handshake", v.Text);
        v.Connected(ChannelRole.Urgent, "127.0.0.1:4000", prepared: false);
        Assert.Equal("measuring the link's round trip, then building the VM from the source's layout", v.Text);
    }
}
