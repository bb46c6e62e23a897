using System.Diagnostics;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Destination;

/// <summary>
/// A destination in post-copy whose connection broke gets a new one to the same source and session: connect the main
/// channel with the session's nonce in its Hello, send the received-page bitmap (<see cref="FrameType.Recover"/>),
/// open the urgent channel, and read the source's <see cref="FrameType.Recovered"/>. Attempts repeat with a backoff
/// (10 ms doubling to 1 s) until <see cref="DestinationOptions.RecoverTimeout"/>; the guest keeps running meanwhile
/// (a vCPU that faults waits for its page, or gets an async "not present").
/// </summary>
internal static class SessionRejoin
{
    public sealed record Rejoined(PeerConnection Main, PeerConnection Urgent, RecoveredMessage Answer, int Attempts);

    /// <summary>The new connection; a one-line <see cref="MigrationException"/> if the source can't be had within the timeout or refuses.</summary>
    public static Rejoined Connect(DestinationOptions o, MigrationAddress source, DestinationSession session, uint rejoin, FirstFailure failure, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var backoff = TimeSpan.FromMilliseconds(10);
        var bitmap = new byte[RecoverMessage.SizeFor(session.Pages.Pages)];
        LinkLostException? last = null;
        for (var attempt = 1; ; attempt++)
        {
            failure.ThrowIfSet();
            ct.ThrowIfCancellationRequested();
            var left = o.RecoverTimeout - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
                throw new MigrationException($"the source is gone: the link was lost in post-copy and {attempt - 1} attempt(s) to rejoin {source} "
                    + $"within {o.RecoverTimeout.TotalSeconds:0.#} s failed ({last?.Message ?? "no answer"}); the guest could not be completed");
            PeerConnection? main = null, urgent = null;
            try
            {
                var wait = left < o.HandshakeTimeout ? left : o.HandshakeTimeout;
                main = DestinationLink.Open(o, source, ChannelRole.Main, wait, ct);
                var hello = main.ExchangeHello(ChannelRole.Main, ChannelRole.Source, session.Id, wait, o.Security);   // the key proves itself on a rejoin too
                if (hello.Nonce != session.Id) throw new MigrationException($"{source} answered for session 0x{hello.Nonce:x}, not this destination's 0x{session.Id:x}");
                var pages = session.Pages;
                RecoverMessage.Encode(bitmap, pages.Pages, rejoin, pages.HasArrived);
                main.Send(FrameType.Recover, 0, bitmap);
                urgent = DestinationLink.Open(o, source, ChannelRole.Urgent, wait, ct);
                urgent.ExchangeHello(ChannelRole.Urgent, ChannelRole.Source, session.Id, wait, o.Security);
                var answer = RecoveredMessage.Decode(main.Expect(FrameType.Recovered, wait).Payload);
                return new Rejoined(main, urgent, answer, attempt);
            }
            catch (LinkLostException e)
            {
                // the source is not there (yet), or the new connection broke too: try again
                last = e;
                main?.Dispose();
                urgent?.Dispose();
                Thread.Sleep(backoff);
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.TicksPerSecond));
            }
            catch
            {
                main?.Dispose();
                urgent?.Dispose();
                throw;
            }
        }
    }
}
