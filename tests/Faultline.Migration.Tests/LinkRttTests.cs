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

/// <summary>The link's round trip: Ping/Pong on the urgent channel before the pause, through the same stack the demands use.</summary>
public sealed class LinkRttTests(ITestOutputHelper output)
{
    /// <summary>Two ends of a real loopback TCP connection, Hellos exchanged, each behind <paramref name="delay"/> like a migration's channels.</summary>
    private static (PeerConnection Dest, PeerConnection Source) Pair(TimeSpan delay = default)
    {
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        PeerConnection? source = null;
        var t = new Thread(() =>
        {
            source = new PeerConnection(listener.Accept(TimeSpan.FromSeconds(5)), ChannelRole.Urgent, delay);
            source.ExchangeHello(ChannelRole.Source, ChannelRole.Urgent, 9, TimeSpan.FromSeconds(5));
        });
        t.Start();
        var dest = new PeerConnection(listener.Address.Connect(TimeSpan.FromSeconds(5)), ChannelRole.Urgent, delay);
        dest.ExchangeHello(ChannelRole.Urgent, ChannelRole.Source, 9, TimeSpan.FromSeconds(5));
        t.Join();
        return (dest, source!);
    }

    [Fact]
    public void Every_ping_is_answered_in_order_and_the_round_trip_includes_the_emulated_delay_both_ways()
    {
        var (dest, source) = Pair(TimeSpan.FromMicroseconds(300));
        using (dest)
        using (source)
        {
            var answered = 0;
            var t = new Thread(() => answered = LinkRttProbe.Answer(source, TimeSpan.FromSeconds(5)));
            t.Start();
            var rtt = LinkRttProbe.Measure(dest, 20, TimeSpan.FromSeconds(5));
            t.Join();
            output.WriteLine($"rtt p50 {rtt.P50:0.0} µs, min {rtt.Min:0.0} µs");
            Assert.Equal(20, answered);
            Assert.Equal(20, rtt.Count);
            // not a speed check: each direction waits in its delay line at least 300 µs, so no round trip can be shorter
            Assert.True(rtt.Min >= 600, $"a round trip of {rtt.Min} µs skipped the delay line");
            Assert.True(rtt.P50 >= rtt.Min);
        }
    }

    [Fact]
    public void A_pong_for_another_ping_is_a_protocol_error()
    {
        var (dest, source) = Pair();
        using (dest)
        using (source)
        {
            var t = new Thread(() =>
            {
                var f = source.Read();
                var p = PingMessage.Decode(f.Payload, source.Peer);
                Span<byte> b = stackalloc byte[PingMessage.Size];
                (p with { Sequence = p.Sequence + 1, Count = p.Count }).Encode(b);
                source.Send(FrameType.Pong, 0, b);
            });
            t.Start();
            var e = Assert.ThrowsAny<MigrationException>(() => LinkRttProbe.Measure(dest, 5, TimeSpan.FromSeconds(5)));
            t.Join();
            Assert.Equal($"protocol error: {dest.Peer} answered ping 0 with pong 1", e.Message);
        }
    }

    [Fact]
    public void A_burst_that_skips_a_ping_or_sends_something_else_is_refused_by_the_answering_end()
    {
        var (dest, source) = Pair();
        using (dest)
        using (source)
        {
            Span<byte> b = stackalloc byte[PingMessage.Size];
            new PingMessage(0, 3, 1).Encode(b);
            dest.Send(FrameType.Ping, 0, b);
            new PingMessage(2, 3, 2).Encode(b);
            dest.Send(FrameType.Ping, 0, b);
            var e = Assert.ThrowsAny<MigrationException>(() => LinkRttProbe.Answer(source, TimeSpan.FromSeconds(5)));
            Assert.Equal($"protocol error: {source.Peer} sent ping 2 where 1 was due", e.Message);
            Assert.Equal(FrameType.Pong, dest.Read().Type);   // the first one was answered

            dest.Send(FrameType.Ready, 0, default);
            e = Assert.ThrowsAny<MigrationException>(() => LinkRttProbe.Answer(source, TimeSpan.FromSeconds(5)));
            Assert.Equal($"protocol error: expected Ping from {source.Peer}, got Ready", e.Message);
        }
    }

    [KvmFact]
    public void A_migration_reports_the_round_trip_it_measured_and_the_fault_target_it_sets()
    {
        var o = MigrationHarness.Run(new SourceOptions(1, 4 * MiB) { WriteFraction = 0.75, LinkDelay = TimeSpan.FromMicroseconds(100) },
            a => new DestinationOptions(a, PagingMode.Exits) { LinkDelay = TimeSpan.FromMicroseconds(100), RttProbes = 30 });
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        var json = r.ToJson();
        output.WriteLine(json);
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(30, r.LinkRttUs.Count);
        Assert.True(r.LinkRttUs.Min >= 200, $"round trip {r.LinkRttUs.Min} µs is shorter than the two emulated delays");
        Assert.Equal(r.LinkRttUs.P50 + 30, r.FaultLatencyTargetUs);
        Assert.Equal(r.FaultLatencyUs.P50 <= r.FaultLatencyTargetUs, r.FaultLatencyTargetMet);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.True(doc.RootElement.GetProperty("link_rtt_us").GetProperty("p50").GetDouble() > 0);
        Assert.True(doc.RootElement.GetProperty("fault_latency_target_us").GetDouble() > 30);
        Assert.Contains(doc.RootElement.GetProperty("demand_path_scheduling").GetProperty("destination").GetString(), new[] { "SCHED_FIFO", "nice" });
    }
}
