using System.Diagnostics;
using Faultline.Kvm.Memory;

namespace Faultline.Paging.Engines;

/// <summary>
/// Per-page state of guest RAM under test, changed atomically: missing → requested (a fault path asked the source)
/// → installing (an installer claimed it) → present. Whoever wins the claim installs a page exactly once; a fault path
/// that needs a page waits here, on the tracker, never on the source: <see cref="WaitPresent"/> spins, then blocks
/// on its own slot, which <see cref="Publish"/> signals. One byte per 4 KiB page (0.024% of guest memory) plus a
/// fixed table of waiter slots, made once.
/// </summary>
public sealed class PageTracker : IDisposable
{
    public const byte Missing = 0, Installing = 1, Present = 2, Requested = 3;
    private const int Slots = 64;
    /// <summary>The longest a blocked <see cref="WaitPresent"/> sleeps before it looks at its page again, ms.</summary>
    public const int WaitTimerMs = 50;
    private readonly byte[] _state;
    private long _present;
    private readonly long[] _waitingFor;                      // per slot: page index + 1, 0 = free
    private readonly ManualResetEventSlim[] _wake;
    private int _waiters;
    private long _timerExpiries, _endedByTimer;
    private volatile Exception? _failure;
    private int[]? _watch;                                    // per page: watchers that want to hear when it is present
    private int _watched;                                     // pages with a watcher
    private IPresentObserver? _observer;

    public GuestAddress Base { get; }
    public ulong Pages { get; }
    public long PresentCount => Interlocked.Read(ref _present);
    public bool Complete => PresentCount == (long)Pages;
    public long MemoryBytes => _state.Length + Slots * 8L;
    /// <summary>Blocked waits whose sleep ran out (<see cref="WaitTimerMs"/>) instead of being woken.</summary>
    public long WaitTimerExpiries => Interlocked.Read(ref _timerExpiries);
    /// <summary>
    /// Of those, the ones after which the page was present: its publish happened and the wake-up did not reach the
    /// waiter (a lost wake-up, or a publish in the last instant of the sleep). Should stay 0.
    /// </summary>
    public long WaitsEndedByTimer => Interlocked.Read(ref _endedByTimer);
    /// <summary>Set by <see cref="Fail"/>: the pages still missing will not come.</summary>
    public Exception? Failure => _failure;

    public PageTracker(GuestAddress @base, ulong bytes)
    {
        Base = @base;
        Pages = bytes >> GuestAddress.PageShift;
        _state = new byte[Pages];
        _waitingFor = new long[Slots];
        _wake = new ManualResetEventSlim[Slots];
        for (var i = 0; i < Slots; i++) _wake[i] = new ManualResetEventSlim(false, spinCount: 1);
    }

    public bool Contains(GuestAddress gpa) => gpa.Value >= Base.Value && (gpa.Value - Base.Value) >> 12 < Pages;
    public ulong IndexOf(GuestAddress gpa) => (gpa.Value - Base.Value) >> 12;
    public GuestAddress AddressOf(ulong index) => Base + (index << 12);

    public byte StateOf(ulong index) => Volatile.Read(ref _state[index]);
    public bool IsPresent(ulong index) => Volatile.Read(ref _state[index]) == Present;

    /// <summary>Marks a missing page requested; true for the one caller that must ask the source for it.</summary>
    public bool TryRequest(ulong index) => Interlocked.CompareExchange(ref _state[index], Requested, Missing) == Missing;

    /// <summary>Claims a missing or requested page for installing; false if an installer has it or it is present.</summary>
    public bool TryClaim(ulong index)
    {
        ref var s = ref _state[index];
        var now = Volatile.Read(ref s);
        while (now is Missing or Requested)
        {
            // a fault path may mark the page requested between the read and the swap: try again with what it is now
            var was = Interlocked.CompareExchange(ref s, Installing, now);
            if (was == now) return true;
            now = was;
        }
        return false;
    }

    /// <summary>Publishes a claimed page as present and wakes a fault path waiting for it.</summary>
    public void Publish(ulong index)
    {
        Volatile.Write(ref _state[index], Present);
        Interlocked.Increment(ref _present);                 // a full fence: the waiter count below is read after the store
        if (Volatile.Read(ref _waiters) != 0) WakeRange(index, 1);
        if (Volatile.Read(ref _watched) != 0) NotifyRange(index, 1);
    }

    /// <summary>
    /// Sets who hears of watched pages becoming present (once, before faults): <see cref="Watch"/> marks a page, and
    /// the thread that publishes it calls <see cref="IPresentObserver.OnPresent"/> right after the page is present.
    /// This is how a fault that does not wait (an async page fault) learns that its page came.
    /// </summary>
    public void SetObserver(IPresentObserver observer)
    {
        if (Interlocked.CompareExchange(ref _observer, observer, null) is not null) throw new InvalidOperationException("the tracker has an observer already");
        _watch = new int[Pages];
    }

    /// <summary>
    /// Asks to hear when page <paramref name="index"/> is present. True when it is present already (then no call
    /// comes for it; the caller acts now): either this returns true or the publisher calls the observer, or both.
    /// </summary>
    public bool Watch(ulong index)
    {
        var watch = _watch ?? throw new InvalidOperationException("the tracker has no observer");
        if (Interlocked.Increment(ref watch[index]) == 1) Interlocked.Increment(ref _watched);   // full fences: the state is read after
        return IsPresent(index);
    }

    /// <summary>Ends one <see cref="Watch"/> of page <paramref name="index"/>.</summary>
    public void Unwatch(ulong index)
    {
        var watch = _watch ?? throw new InvalidOperationException("the tracker has no observer");
        if (Interlocked.Decrement(ref watch[index]) == 0) Interlocked.Decrement(ref _watched);
    }

    private void NotifyRange(ulong first, int count)
    {
        var watch = _watch!;
        for (var i = 0; i < count; i++)
            if (Volatile.Read(ref watch[first + (ulong)i]) != 0) _observer!.OnPresent(first + (ulong)i);
    }

    /// <summary>Publishes <paramref name="count"/> claimed pages from <paramref name="first"/> (one wake-up scan).</summary>
    public void PublishRun(ulong first, int count)
    {
        for (var i = 0; i < count; i++) Volatile.Write(ref _state[first + (ulong)i], Present);
        Interlocked.Add(ref _present, count);
        if (Volatile.Read(ref _waiters) != 0) WakeRange(first, count);
        if (Volatile.Read(ref _watched) != 0) NotifyRange(first, count);
    }

    private void WakeRange(ulong first, int count)
    {
        for (var s = 0; s < Slots; s++)
        {
            var w = Volatile.Read(ref _waitingFor[s]);
            if (w != 0 && (ulong)(w - 1) - first < (ulong)count) _wake[s].Set();
        }
    }

    /// <summary>Gives a claim back without installing: the page is missing again (a waiter asks for it again).</summary>
    public void Abandon(ulong index)
    {
        Volatile.Write(ref _state[index], Missing);
        Thread.MemoryBarrier();
        if (Volatile.Read(ref _waiters) != 0) WakeRange(index, 1);
    }

    /// <summary>Marks a present page missing again (its host mapping was taken away).</summary>
    public bool TryReset(ulong index)
    {
        if (Interlocked.CompareExchange(ref _state[index], Missing, Present) != Present) return false;
        Interlocked.Decrement(ref _present);
        return true;
    }

    /// <summary>Takes a present page for eviction (Present → Installing: installers wait meanwhile).</summary>
    public bool TryClaimPresent(ulong index)
    {
        if (Interlocked.CompareExchange(ref _state[index], Installing, Present) != Present) return false;
        Interlocked.Decrement(ref _present);
        return true;
    }

    /// <summary>Ends an eviction: the page is missing on the host now.</summary>
    public void ReleaseToMissing(ulong index) => Volatile.Write(ref _state[index], Missing);

    /// <summary>
    /// The pages still missing will not come (the source failed): every waiter returns with <paramref name="error"/>,
    /// later waits too. The first failure is kept.
    /// </summary>
    public void Fail(Exception error)
    {
        Interlocked.CompareExchange(ref _failure, error, null);
        for (var s = 0; s < Slots; s++) _wake[s].Set();
    }

    /// <summary>
    /// Waits until page <paramref name="index"/> is present. <paramref name="rerequest"/> is called (on this thread)
    /// whenever the page is found missing again (an installer gave its claim back, or a lost request), so that it is
    /// asked for once more. Spins for <paramref name="spinTicks"/> (a page that lands meanwhile costs no wake-up, which
    /// on this nested host is 15–27 µs across CPUs and can wait for a host tick), then blocks on a waiter slot.
    /// Returns false on <see cref="Fail"/> (see <see cref="Failure"/>) or when <paramref name="timeout"/> passes.
    /// Allocation-free.
    /// </summary>
    public bool WaitPresent(ulong index, long spinTicks, TimeSpan timeout, IRerequest? rerequest)
    {
        ref var s = ref _state[index];
        if (Volatile.Read(ref s) == Present) return true;
        var start = Stopwatch.GetTimestamp();
        var spinUntil = start + spinTicks;
        while (true)
        {
            var now = Volatile.Read(ref s);
            if (now == Present) return true;
            if (_failure is not null) return false;
            if (now == Missing && rerequest is not null && TryRequest(index)) rerequest.Request(index);
            if (Stopwatch.GetTimestamp() >= spinUntil) break;
            Thread.SpinWait(8);
        }
        var deadline = start + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        var slot = Enter(index);
        try
        {
            while (true)
            {
                var now = Volatile.Read(ref s);
                if (now == Present) return true;
                if (_failure is not null) return false;
                if (now == Missing && rerequest is not null && TryRequest(index)) rerequest.Request(index);
                var left = deadline - Stopwatch.GetTimestamp();
                if (left <= 0) return false;
                if (!_wake[slot].Wait((int)Math.Clamp(left * 1000 / Stopwatch.Frequency, 1, WaitTimerMs)))
                {
                    Interlocked.Increment(ref _timerExpiries);
                    if (Volatile.Read(ref s) == Present) Interlocked.Increment(ref _endedByTimer);
                }
                _wake[slot].Reset();
            }
        }
        finally { Leave(slot); }
    }

    private int Enter(ulong index)
    {
        Interlocked.Increment(ref _waiters);
        while (true)
        {
            for (var i = 0; i < Slots; i++)
                if (Interlocked.CompareExchange(ref _waitingFor[i], (long)index + 1, 0) == 0)
                {
                    _wake[i].Reset();
                    return i;          // the CAS is a full fence: the caller's next state read follows it
                }
            Thread.Yield();            // more than 64 threads waiting at once: wait for a slot
        }
    }

    private void Leave(int slot)
    {
        Volatile.Write(ref _waitingFor[slot], 0);
        Interlocked.Decrement(ref _waiters);
    }

    /// <summary>Marks every page present (memory populated up front).</summary>
    public void MarkAllPresent()
    {
        Array.Fill(_state, Present);
        Interlocked.Exchange(ref _present, (long)Pages);
    }

    public void Dispose()
    {
        foreach (var w in _wake) w.Dispose();
    }
}

/// <summary>Hears that a watched page is present (<see cref="PageTracker.Watch"/>), on the publishing thread: keep it short, never block.</summary>
public interface IPresentObserver
{
    void OnPresent(ulong index);
}

/// <summary>Asks a page source again for a page whose request was lost or given back (see <see cref="PageTracker.WaitPresent"/>).</summary>
public interface IRerequest
{
    void Request(ulong index);
}
