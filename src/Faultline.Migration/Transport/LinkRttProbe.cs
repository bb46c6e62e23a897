using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;

namespace Faultline.Migration.Transport;

/// <summary>
/// The link's round trip, measured on the urgent channel before the pause, through the same stack a demand and its
/// page take (socket, emulated delay line and its pump): the destination sends a burst of Pings one at a time, the
/// source answers each with a Pong at once. The destination's thread runs as a fault path does (normal priority), the source's as
/// its demand server is, so that each wake-up on the way is scheduled as a demand's would be (the source's vCPUs
/// still run the guest at this point, so every one of them must take a CPU from a busy thread, as during post-copy).
/// </summary>
internal static class LinkRttProbe
{
    /// <summary>Destination: sends <paramref name="count"/> probes, one after the other; returns their round trips.</summary>
    public static LatencySummary Measure(PeerConnection urgent, int count, TimeSpan timeout)
    {
        var rtt = new LatencyRecorder(count);
        Span<byte> b = stackalloc byte[PingMessage.Size];
        var old = urgent.Channel.ReceiveTimeout;
        urgent.Channel.ReceiveTimeout = timeout;   // once, not per probe: setsockopt is not part of the link
        try
        {
            for (var i = 0; i < count; i++)
            {
                var t0 = Clock.NowNs();
                new PingMessage((uint)i, (uint)count, t0).Encode(b);
                urgent.Send(FrameType.Ping, 0, b);
                var f = urgent.Read();
                var t1 = Clock.NowNs();
                if (f.Type != FrameType.Pong) throw new MigrationException($"protocol error: expected Pong from {urgent.Peer}, got {f.Type}");
                var echo = PingMessage.Decode(f.Payload, urgent.Peer);
                if (echo.Sequence != (uint)i || echo.SentNs != t0)
                    throw new MigrationException($"protocol error: {urgent.Peer} answered ping {i} with pong {echo.Sequence}");
                rtt.Record(t1 - t0);
            }
        }
        finally
        {
            urgent.Channel.ReceiveTimeout = old;
        }
        return rtt.Summarize();
    }

    /// <summary>Source: answers every probe of the destination's burst with a Pong, in order; returns how many.</summary>
    public static int Answer(PeerConnection urgent, TimeSpan timeout)
    {
        var old = urgent.Channel.ReceiveTimeout;
        urgent.Channel.ReceiveTimeout = timeout;
        ThreadPriority.JoinDemandPath();   // as the demand server that answers demands later
        try
        {
            for (uint i = 0; ; i++)
            {
                var f = urgent.Read();
                if (f.Type != FrameType.Ping) throw new MigrationException($"protocol error: expected Ping from {urgent.Peer}, got {f.Type}");
                var p = PingMessage.Decode(f.Payload, urgent.Peer);
                if (p.Sequence != i) throw new MigrationException($"protocol error: {urgent.Peer} sent ping {p.Sequence} where {i} was due");
                urgent.Send(FrameType.Pong, 0, f.Payload);
                if (p.Sequence + 1 == p.Count) return (int)p.Count;
            }
        }
        finally
        {
            ThreadPriority.LeaveDemandPath();
            urgent.Channel.ReceiveTimeout = old;
        }
    }
}
