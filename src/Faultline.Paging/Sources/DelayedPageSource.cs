using System.Diagnostics;
using Faultline.Kvm;
using Faultline.Kvm.Threads;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Sources;

/// <summary>
/// A page source whose pages take a fixed time to arrive: each request is installed <see cref="Latency"/> after it was
/// made, by one delivery thread, with the bytes of an immediate source (<c>--latency</c>: a stand-in for a link or a
/// slow disk, measured against the same guest with sync and async page faults). The thread sleeps with
/// clock_nanosleep (1 µs timer slack), so short latencies are kept without spinning a CPU away from the vCPUs.
/// Requests are kept in order (one latency for all: first in, first due) in a ring that grows under its lock when a
/// burst outruns it; Request never waits for the delivery thread.
/// </summary>
public sealed class DelayedPageSource : IPageSource, IDisposable
{
    private readonly IImmediatePageSource _inner;
    private readonly long _delayTicks;
    private readonly object _lock = new();
    private readonly SemaphoreSlim _items = new(0);
    private (ulong Page, long Due)[] _ring = new (ulong, long)[4096];
    private int _head, _count;
    private IPageSink? _sink;
    private Thread? _thread;
    private volatile bool _stop;
    private long _served, _lateTicksMax;
    private readonly bool _realTime;
    private volatile bool _deliversInRealTime;     // set by the delivery thread, read by the caller

    /// <param name="realTime">
    /// Run the delivery thread under SCHED_FIFO (priority 1) where the kernel allows it: its timer's wake-up then
    /// preempts a vCPU at once instead of waiting for the CPU's next tick (seen here: deliveries up to a 4 ms tick late
    /// behind a vCPU running guest code). It only sleeps, installs and kicks, taking a vCPU's lock for a few
    /// instructions; yet at 30 µs latencies some of its pages were 50–100 ms late (not understood: docs/async-pf.md).
    /// </param>
    public DelayedPageSource(IImmediatePageSource inner, TimeSpan latency, bool realTime = false)
    {
        _realTime = realTime;
        if (latency < TimeSpan.Zero) throw new UsageException("a page latency cannot be negative");
        _inner = inner;
        Latency = latency;
        _delayTicks = (long)(latency.TotalSeconds * Stopwatch.Frequency);
    }

    public TimeSpan Latency { get; }
    public bool CompletesOnRequest => false;
    public TimeSpan ExpectedLatency => Latency;
    public long PagesServed => Interlocked.Read(ref _served);
    /// <summary>The latest a page was installed past its due time (the delivery thread's own lateness).</summary>
    public TimeSpan LatestDelivery => TimeSpan.FromSeconds((double)Interlocked.Read(ref _lateTicksMax) / Stopwatch.Frequency);
    /// <summary>Whether the delivery thread runs under SCHED_FIFO (asked for and granted).</summary>
    public bool DeliversInRealTime => _deliversInRealTime;
    /// <summary>Requests not delivered yet.</summary>
    public int InFlight { get { lock (_lock) return _count; } }

    public void Start(IPageSink sink)
    {
        if (_sink is not null) throw new InvalidOperationException("source started already");
        _sink = sink;
        _thread = new Thread(Deliver) { Name = "fl-delay", IsBackground = true };
        _thread.Start();
    }

    public void Request(GuestAddress page)
    {
        var due = Stopwatch.GetTimestamp() + _delayTicks;
        lock (_lock)
        {
            if (_count == _ring.Length) Grow();
            _ring[(_head + _count) % _ring.Length] = (page.Value, due);
            _count++;
        }
        _items.Release();
    }

    private void Grow()
    {
        var bigger = new (ulong, long)[_ring.Length * 2];
        for (var i = 0; i < _count; i++) bigger[i] = _ring[(_head + i) % _ring.Length];
        _ring = bigger;
        _head = 0;
    }

    private void Deliver()
    {
        HostThread.TrySetTimerSlack(TimeSpan.FromTicks(10));
        if (_realTime) _deliversInRealTime = HostThread.TrySetPolicy(HostThread.CurrentId, SchedulingPolicy.Fifo, 1, out _);
        var buf = new byte[GuestAddress.PageSize];
        try
        {
            while (!_stop)
            {
                _items.Wait();
                if (_stop) return;
                (ulong Page, long Due) next;
                lock (_lock) next = _ring[_head];
                // in slices: Dispose must not wait out a long latency, and nothing is installed once it began
                var slice = Stopwatch.Frequency / 20;
                while (!_stop && Stopwatch.GetTimestamp() < next.Due) HostThread.SleepUntil(Math.Min(next.Due, Stopwatch.GetTimestamp() + slice));
                if (_stop) return;
                lock (_lock)
                {
                    _head = (_head + 1) % _ring.Length;
                    _count--;
                }
                var late = Stopwatch.GetTimestamp() - next.Due;
                if (late > Interlocked.Read(ref _lateTicksMax)) Interlocked.Exchange(ref _lateTicksMax, late);
                var page = new GuestAddress(next.Page);
                _inner.Read(page, buf);
                _sink!.Install(page, buf);
                Interlocked.Increment(ref _served);
            }
        }
        catch (Exception e)
        {
            // stopping: the engine may be gone already (its userfaultfd closed); the page is not needed any more
            if (!_stop) _sink!.Fail(new PageUnavailableException($"the delayed page source failed: {e.Message}", e));
        }
    }

    public string Describe() => $"{_inner.Describe()}, each page {Latency.TotalMicroseconds:0} µs after its request";

    public void Dispose()
    {
        _stop = true;
        _items.Release();
        _thread?.Join();
        _items.Dispose();
    }
}
