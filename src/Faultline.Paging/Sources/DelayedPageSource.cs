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
/// Requests are kept in order (one latency for all: first in, first due) in a lock-free ring (many requesters, one
/// delivery thread: a slot's sequence number says whose turn it is); an idle delivery thread sleeps on a
/// <see cref="WakeEvent"/> (an eventfd). No request takes a lock or waits for the delivery thread, which holds none
/// either; a full ring (<see cref="Capacity"/> requests not yet due) makes a requester wait for a free slot.
/// </summary>
public sealed class DelayedPageSource : IPageSource, IDisposable
{
    private readonly IImmediatePageSource _inner;
    private readonly long _delayTicks;
    /// <summary>Requests the ring holds at once.</summary>
    public const int Capacity = 1 << 14;
    private readonly Slot[] _ring = new Slot[Capacity];
    private long _tail;                            // the next slot a requester claims
    private long _head;                            // the next slot delivered (the delivery thread's alone)
    private readonly WakeEvent _wake = new();
    private long _fullWaits;
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
    /// instructions. At 30 µs most rows stay within 0.4 ms; a few pages were 7–37 ms late (not traced yet: docs/async-pf.md).
    /// </param>
    public DelayedPageSource(IImmediatePageSource inner, TimeSpan latency, bool realTime = false)
    {
        _realTime = realTime;
        if (latency < TimeSpan.Zero) throw new UsageException("a page latency cannot be negative");
        _inner = inner;
        Latency = latency;
        _delayTicks = (long)(latency.TotalSeconds * Stopwatch.Frequency);
        for (var i = 0; i < Capacity; i++) _ring[i].Sequence = i;
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
    public int InFlight => (int)(Interlocked.Read(ref _tail) - Interlocked.Read(ref _head));
    /// <summary>Times a requester found the ring full and waited for a slot.</summary>
    public long FullWaits => Interlocked.Read(ref _fullWaits);
    /// <summary>Requests that found the delivery thread asleep and woke it (eventfd writes).</summary>
    public long Wakeups => _wake.Writes;

    private struct Slot
    {
        public long Sequence;                      // == position: free for it; == position + 1: holds its request
        public ulong Page;
        public long Due;
    }

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
        var spin = new SpinWait();
        while (true)
        {
            var pos = Volatile.Read(ref _tail);
            ref var slot = ref _ring[pos & (Capacity - 1)];
            var seq = Volatile.Read(ref slot.Sequence);
            if (seq == pos)
            {
                if (Interlocked.CompareExchange(ref _tail, pos + 1, pos) != pos) continue;
                slot.Page = page.Value;
                slot.Due = due;
                Volatile.Write(ref slot.Sequence, pos + 1);
                _wake.Signal();
                return;
            }
            if (seq < pos)
            {
                // full: the delivery thread frees this slot when the request in it is due
                if (!spin.NextSpinWillYield) Interlocked.Increment(ref _fullWaits);
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }
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
                ref var slot = ref _ring[_head & (Capacity - 1)];
                if (Volatile.Read(ref slot.Sequence) != _head + 1)
                {
                    _wake.Arm();
                    if (Volatile.Read(ref slot.Sequence) == _head + 1 || _stop) _wake.Disarm();
                    else _wake.Wait();
                    continue;
                }
                var next = (slot.Page, slot.Due);
                // in slices: Dispose must not wait out a long latency, and nothing is installed once it began
                var slice = Stopwatch.Frequency / 20;
                while (!_stop && Stopwatch.GetTimestamp() < next.Due) HostThread.SleepUntil(Math.Min(next.Due, Stopwatch.GetTimestamp() + slice));
                if (_stop) return;
                Volatile.Write(ref slot.Sequence, _head + Capacity);     // free for the request a lap later
                Interlocked.Increment(ref _head);
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
        _wake.SignalAlways();
        _thread?.Join();
        _wake.Dispose();
    }
}
