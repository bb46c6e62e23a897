using Faultline.Guest;

namespace Faultline.Kvm.Tests;

/// <summary>The loop's event ring on its own: FIFO, bounded, and no event lost or reordered per producer under contention.</summary>
public sealed class VcpuEventQueueTests
{
    [Fact]
    public void Events_come_out_in_order_and_a_full_queue_refuses_more()
    {
        var q = new VcpuEventQueue(capacity: 4);
        for (var i = 0; i < 4; i++) Assert.True(q.TryEnqueue(VcpuEvent.Interrupt((byte)(0x40 + i))));
        Assert.False(q.TryEnqueue(VcpuEvent.Interrupt(0x50)));
        Assert.Equal(4, q.Count);
        Assert.True(q.TryPeek(out var head));
        Assert.Equal(0x40, head.Vector);
        for (var i = 0; i < 4; i++)
        {
            Assert.True(q.TryDequeue(out var e));
            Assert.Equal(0x40 + i, e.Vector);
        }
        Assert.False(q.TryDequeue(out _));
        for (var n = 0; n < 11; n++)   // one in, one out, around the ring a few times
        {
            Assert.True(q.TryEnqueue(VcpuEvent.PageFault((uint)n, 0x1000UL * (ulong)n)));
            Assert.True(q.TryDequeue(out var pf));
            Assert.Equal((VcpuEventKind.Exception, (byte)14, (uint)n, 0x1000UL * (ulong)n, true), (pf.Kind, pf.Vector, pf.ErrorCode, pf.Payload, pf.HasPayload));
        }
        for (var i = 0; i < 4; i++) Assert.True(q.TryEnqueue(VcpuEvent.Interrupt((byte)(0x60 + i))));
        Assert.Equal(4, q.Count);
    }

    [Fact]
    public void Concurrent_producers_lose_nothing_and_each_producers_events_stay_in_order()
    {
        const int producers = 3, perProducer = 20_000;
        var q = new VcpuEventQueue(capacity: 16);
        var next = new uint[producers];
        var got = 0;
        var threads = new Thread[producers];
        for (var p = 0; p < producers; p++)
        {
            var id = p;
            threads[p] = new Thread(() =>
            {
                for (uint i = 0; i < perProducer; i++)
                    while (!q.TryEnqueue(VcpuEvent.Exception((byte)id, i))) Thread.Yield();   // full: the consumer catches up
            }) { IsBackground = true };
            threads[p].Start();
        }
        var wrong = 0;
        while (got < producers * perProducer)
        {
            if (!q.TryDequeue(out var e)) { Thread.Yield(); continue; }
            if (e.ErrorCode != next[e.Vector]) wrong++;
            next[e.Vector] = e.ErrorCode + 1;
            got++;
        }
        foreach (var t in threads) t.Join();
        Assert.Equal(0, wrong);
        Assert.All(next, n => Assert.Equal((uint)perProducer, n));
        Assert.False(q.TryDequeue(out _));
    }

    [Fact]
    public void Vectors_outside_their_range_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => VcpuEvent.Interrupt(14));
        Assert.Throws<ArgumentOutOfRangeException>(() => VcpuEvent.Exception(32));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VcpuEventQueue(capacity: 3));
    }
}
