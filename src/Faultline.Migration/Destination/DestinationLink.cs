using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Destination;

/// <summary>
/// One connection of a destination session to its source: the main and urgent channels and the two threads that
/// receive on them. It ends as a whole: when either channel breaks (<see cref="MarkLost"/>: both are shut down, and
/// the session decides whether to rejoin over a new link) or on the session's first failure. Disposing it joins the
/// receivers, so that everything this link brought has been taken in (the received-page bitmap is final for it).
/// </summary>
internal sealed class DestinationLink(PeerConnection main, PeerConnection urgent, StandbyThread mainReceiver, StandbyThread urgentReceiver) : IDisposable
{
    private readonly ManualResetEventSlim _lost = new(false);
    private readonly ManualResetEventSlim _shut = new(false);   // the link is going down: a hold ends
    private LinkLostException? _cause;
    private int _disposed;

    public PeerConnection Main { get; } = main;
    public PeerConnection Urgent { get; } = urgent;
    public StandbyThread MainReceiver { get; } = mainReceiver;
    public StandbyThread UrgentReceiver { get; } = urgentReceiver;
    /// <summary>Connects one channel of a link to <paramref name="source"/>: the socket, TLS if on, the test seam, the emulated delay (the Hello is the caller's).</summary>
    public static PeerConnection Open(DestinationOptions o, MigrationAddress source, ChannelRole role, TimeSpan timeout, CancellationToken ct) =>
        new(o.Wrap(o.Security.Connected(source.Connect(timeout, ct), timeout), role), role, o.LinkDelay);

    /// <summary>Set once either channel broke.</summary>
    public WaitHandle Lost => _lost.WaitHandle;
    public bool IsLost => _lost.IsSet;
    /// <summary>What broke first.</summary>
    public LinkLostException? Cause => Volatile.Read(ref _cause);
    /// <summary>Bytes both channels carried, both ways.</summary>
    public long Bytes => Main.Channel.BytesReceived + Urgent.Channel.BytesReceived + Main.Channel.BytesSent + Urgent.Channel.BytesSent;

    /// <summary>A channel broke with <paramref name="e"/>: the link is lost, both channels are shut down (the other receiver returns).</summary>
    public void MarkLost(LinkLostException e)
    {
        if (Interlocked.CompareExchange(ref _cause, e, null) is not null) return;
        _lost.Set();
        Shutdown();
    }

    /// <summary>Cuts the link as a broken network would (fault injection): both channels shut down in both directions; both ends see it.</summary>
    public void Cut() => Shutdown();

    private long _holdUntil;   // Stopwatch ticks: neither receiver reads before it (--inject delay)

    /// <summary>Holds the link for <paramref name="hold"/>: each receiver stops reading after the frame in hand.</summary>
    public void Hold(TimeSpan hold) => Volatile.Write(ref _holdUntil, System.Diagnostics.Stopwatch.GetTimestamp() + (long)(hold.TotalSeconds * System.Diagnostics.Stopwatch.Frequency));

    /// <summary>A receiver, before it reads its next frame: waits out a hold, if one is on.</summary>
    public void WaitOutHold()
    {
        var until = Volatile.Read(ref _holdUntil);
        if (until == 0) return;
        var left = System.Diagnostics.Stopwatch.GetElapsedTime(System.Diagnostics.Stopwatch.GetTimestamp(), until);
        if (left > TimeSpan.Zero && !_shut.IsSet) _shut.Wait(left);   // a link lost or shut down meanwhile ends the hold
    }

    /// <summary>Tells the source why we stop on both channels, within <see cref="PeerConnection.AbortBound"/>.</summary>
    public void TryAbort(string message) => PeerConnection.TryAbort(message, Main, Urgent);

    public void Shutdown()
    {
        _shut.Set();
        Main.Shutdown();
        Urgent.Shutdown();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Shutdown();
        MainReceiver.Dispose();
        UrgentReceiver.Dispose();
        Main.Dispose();
        Urgent.Dispose();
        _lost.Dispose();
        _shut.Dispose();
    }
}
