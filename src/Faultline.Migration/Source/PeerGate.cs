using System.Diagnostics;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Source;

/// <summary>
/// The source's door: accepts connections until one opens the expected channel of this session with a good Hello.
/// Anything else that connects (a port scanner, <c>echo hello | nc</c>, another protocol, another version, a channel
/// of another session, a peer that says nothing within <see cref="SourceOptions.PeerHelloTimeout"/>, one that fails TLS
/// or the key's proof) is refused with
/// one log line and closed, and the source goes on listening: a stray peer never ends a migration.
/// </summary>
internal sealed class PeerGate(MigrationListener listener, SourceOptions o)
{
    /// <summary>
    /// The next connection that opens a <paramref name="role"/> channel (for the urgent channel: repeating
    /// <paramref name="nonce"/>) within <paramref name="within"/> (null: until cancelled); refused ones don't count.
    /// A main channel says 0 when it starts a session and the session's nonce when it rejoins one (<paramref name="rejoin"/>:
    /// only that is let in; otherwise a rejoin is refused, there being no session to rejoin).
    /// </summary>
    public PeerConnection Accept(ChannelRole role, ulong nonce, TimeSpan? within, CancellationToken ct, bool rejoin = false)
    {
        var deadline = within is { } w ? Stopwatch.GetTimestamp() + (long)(w.TotalSeconds * Stopwatch.Frequency) : long.MaxValue;
        while (true)
        {
            TimeSpan? left = deadline == long.MaxValue ? null : Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
            if (left is { } l && l <= TimeSpan.Zero)
                throw new MigrationException(rejoin && role == ChannelRole.Main
                    ? $"the destination did not rejoin at {listener.Address} within {within?.TotalSeconds:0.#} s"
                    : role == ChannelRole.Main
                    ? $"no destination connected to {listener.Address} within {within?.TotalSeconds:0.#} s"
                    : $"the destination did not open its urgent channel to {listener.Address} within {within?.TotalSeconds:0.#} s");
            var raw = listener.Accept(left, ct);
            PeerConnection? peer = null;
            try
            {
                using var reg = ct.Register(raw.Shutdown);
                peer = new PeerConnection(o.Wrap(o.Security.Accepted(raw, o.PeerHelloTimeout), role), role, o.LinkDelay);   // TLS, if on
                peer.Reader.StallTimeout = o.StallTimeout;
                var hello = peer.ExchangeHello(ChannelRole.Source, role, nonce, o.PeerHelloTimeout, o.Security);   // and the key's proof
                if (role == ChannelRole.Urgent && hello.Nonce != nonce)
                {
                    const string m = "urgent channel belongs to another migration session";
                    peer.TryAbort(m);
                    throw new MigrationException($"{peer.Peer} opened an urgent channel for another migration session");
                }
                if (role == ChannelRole.Main && hello.Nonce != (rejoin ? nonce : 0))
                {
                    var m = rejoin
                        ? hello.Nonce == 0 ? "this source waits for its destination to rejoin the session in post-copy; a new destination is not taken now" : "that is not the session this source is waiting to rejoin"
                        : "this source has no session to rejoin";
                    peer.TryAbort(m);
                    throw new MigrationException($"{peer.Peer} {(hello.Nonce == 0 ? "started a new session" : $"tried to rejoin session 0x{hello.Nonce:x}")}: {m}");
                }
                return peer;
            }
            catch (MigrationException e)
            {
                peer?.Dispose();
                raw.Dispose();
                ct.ThrowIfCancellationRequested();
                MigrationLog.PeerRefused(o.Logger, e.Message, listener.Address.Text);
            }
            catch
            {
                peer?.Dispose();
                raw.Dispose();
                throw;
            }
        }
    }
}
