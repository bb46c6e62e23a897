using System.Collections.Concurrent;
using System.Diagnostics;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Tests;

public sealed class DelayedPageSourceTests
{
    /// <summary>Records every install with its time and the bytes' first qword.</summary>
    private sealed class RecordingSink(ulong bytes) : IPageSink
    {
        public PageTracker Tracker { get; } = new(new GuestAddress(0), bytes);
        public readonly ConcurrentQueue<(ulong Page, long At, ulong First)> Installs = new();
        public Exception? Failure;

        public bool Install(GuestAddress page, ReadOnlySpan<byte> b)
        {
            Installs.Enqueue((page.Value, Stopwatch.GetTimestamp(), BitConverter.ToUInt64(b)));
            return true;
        }

        public int InstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed) => throw new NotSupportedException();
        public void Fail(Exception error) => Failure = error;
    }

    [Fact]
    public void Requests_from_many_threads_arrive_once_each_in_order_and_never_early()
    {
        const int Threads = 4, PerThread = 3000;     // 12,000 requests: more than fit the ring at once, 1 ms apart at most
        var sink = new RecordingSink((ulong)Threads * PerThread * 4096);
        using var source = new DelayedPageSource(new PatternPageSource(7), TimeSpan.FromMicroseconds(200));
        source.Start(sink);
        var requested = new ConcurrentDictionary<ulong, long>();
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            for (var i = 0; i < PerThread; i++)
            {
                var page = (ulong)(t * PerThread + i) * 4096;
                requested[page] = Stopwatch.GetTimestamp();
                source.Request(new GuestAddress(page));
                if (i % 100 == 0) Thread.Sleep(1);   // bursts and idle gaps: the delivery thread sleeps and is woken
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var deadline = Stopwatch.StartNew();
        while (sink.Installs.Count < Threads * PerThread && deadline.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(5);

        Assert.Null(sink.Failure);
        var installs = sink.Installs.ToArray();
        Assert.Equal(Threads * PerThread, installs.Length);
        Assert.Equal(Threads * PerThread, installs.Select(i => i.Page).Distinct().Count());
        var latency = Stopwatch.Frequency / 5000;      // 200 µs in ticks
        foreach (var (page, at, first) in installs)
        {
            Assert.True(at - requested[page] >= latency, $"page {page:x} installed {(at - requested[page]) * 1e6 / Stopwatch.Frequency:0} µs after its request");
            Assert.Equal(page + 7, first);             // the inner source's bytes
        }
        // first in, first out: each thread's own requests arrive in the order it made them
        for (var t = 0; t < Threads; t++)
        {
            var mine = installs.Where(i => i.Page / 4096 / PerThread == (ulong)t).Select(i => i.Page).ToList();
            Assert.Equal(mine.Order(), mine);
        }
        Assert.Equal(0, source.InFlight);
        Assert.True(source.Wakeups > 0, "the delivery thread never slept between requests");
    }

    [Fact]
    public void Dispose_does_not_wait_out_a_long_latency_and_installs_nothing_after()
    {
        var sink = new RecordingSink(1 << 20);
        var source = new DelayedPageSource(new PatternPageSource(1), TimeSpan.FromSeconds(60));
        source.Start(sink);
        source.Request(new GuestAddress(0));
        Thread.Sleep(20);
        var took = Stopwatch.StartNew();
        source.Dispose();
        Assert.True(took.Elapsed < TimeSpan.FromSeconds(2), $"Dispose took {took.Elapsed.TotalMilliseconds:0} ms");
        Assert.Empty(sink.Installs);
    }

    [Fact]
    public void A_source_disposed_while_idle_stops_its_thread()
    {
        var source = new DelayedPageSource(new PatternPageSource(1), TimeSpan.FromMicroseconds(30));
        source.Start(new RecordingSink(1 << 20));
        Thread.Sleep(20);                              // the delivery thread is asleep on its eventfd
        var took = Stopwatch.StartNew();
        source.Dispose();
        Assert.True(took.Elapsed < TimeSpan.FromSeconds(2));
    }
}
