using System.Buffers.Binary;
using System.Security.Cryptography;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Security;

/// <summary>
/// Mutual challenge–response with the pre-shared key, right after the Hellos of a connection (every connection:
/// main, urgent, and any later one): both ends send 32 random bytes (AuthChallenge), then each answers the other's
/// with AuthProof = HMAC-SHA256(key, transcript), where the transcript is
/// <code>
///   "FLTLNMIG-auth-1" ‖ u8 prover's role ‖ u8 verifier's role ‖ u64 session nonce
///   ‖ verifier's challenge[32] ‖ prover's challenge[32] ‖ TLS binding[32] (SHA-256 of the source's certificate; zeros without TLS)
/// </code>
/// and checks the peer's proof in constant time. A proof is bound to the verifier's fresh challenge (a replayed one
/// fails), to the prover's role (the source's answer to a challenge is never a destination's answer to it: reflecting
/// a challenge to the source, or its proof back, fails; a challenge equal to ours is refused outright), to the session
/// (the urgent channel proves the main channel's nonce) and, under TLS, to the certificate this TLS session was made
/// with (a man in the middle terminating TLS presents another certificate: its binding differs, so neither proof checks).
/// </summary>
public static class PeerAuth
{
    private static ReadOnlySpan<byte> Label => "FLTLNMIG-auth-1"u8;
    private const int TranscriptSize = 15 + 2 + 8 + 3 * Wire.AuthSize;

    /// <summary>
    /// Proves this end holds <paramref name="key"/> to the peer of <paramref name="c"/> and checks that the peer does,
    /// after the Hellos (<paramref name="peerHello"/>: what the peer announced). Without a key (null) it only checks
    /// that the peer does not expect one. Every refusal is one <see cref="MigrationException"/> line, and the peer is
    /// told with an Abort; each wait is bounded by <paramref name="timeout"/>.
    /// </summary>
    public static void Prove(PeerConnection c, PeerKey? key, ChannelRole ourRole, HelloMessage peerHello, ulong sessionNonce, TimeSpan timeout)
    {
        var peerHasKey = (peerHello.Flags & HelloFlags.Authenticates) != 0;
        if (key is null)
        {
            if (peerHasKey)
                Refuse(c, ourRole == ChannelRole.Source
                    ? $"{c.Peer} wants to authenticate, but this source has no key (--psk-file)"
                    : $"{c.Peer} requires peer authentication: give the source's key with --psk-file");
            return;
        }
        if (!peerHasKey)
            Refuse(c, ourRole == ChannelRole.Source
                ? $"{c.Peer} did not authenticate (it has no key: --psk-file)"
                : $"{c.Peer} does not authenticate (it has no key): refusing an unauthenticated source");

        Span<byte> ours = stackalloc byte[Wire.AuthSize];
        Span<byte> theirs = stackalloc byte[Wire.AuthSize];
        Span<byte> binding = stackalloc byte[Wire.AuthSize];
        Span<byte> proof = stackalloc byte[Wire.AuthSize];
        Span<byte> expected = stackalloc byte[Wire.AuthSize];
        RandomNumberGenerator.Fill(ours);
        if (c.Tls is { } tls) tls.Binding.CopyTo(binding);
        else binding.Clear();
        c.Send(FrameType.AuthChallenge, 0, ours);
        c.Expect(FrameType.AuthChallenge, timeout).Payload.CopyTo(theirs);
        if (theirs.SequenceEqual(ours)) Refuse(c, $"authentication failed: {c.Peer} reflected this end's challenge", "authentication failed");

        Transcript(key, ourRole, peerHello.Role, sessionNonce, theirs, ours, binding, proof);   // answers their challenge
        c.Send(FrameType.AuthProof, 0, proof);
        Transcript(key, peerHello.Role, ourRole, sessionNonce, ours, theirs, binding, expected); // their answer to ours
        var got = c.Expect(FrameType.AuthProof, timeout).Payload;
        if (!CryptographicOperations.FixedTimeEquals(got, expected))
            Refuse(c, $"authentication failed: {c.Peer} does not hold this end's key ({key.Origin})", "authentication failed: wrong key");
    }

    private static void Transcript(PeerKey key, ChannelRole prover, ChannelRole verifier, ulong nonce,
        ReadOnlySpan<byte> verifierChallenge, ReadOnlySpan<byte> proverChallenge, ReadOnlySpan<byte> binding, Span<byte> mac)
    {
        Span<byte> t = stackalloc byte[TranscriptSize];
        Label.CopyTo(t);
        var o = Label.Length;
        t[o++] = (byte)prover;
        t[o++] = (byte)verifier;
        BinaryPrimitives.WriteUInt64LittleEndian(t[o..], nonce);
        o += 8;
        verifierChallenge.CopyTo(t[o..]);
        proverChallenge.CopyTo(t[(o + Wire.AuthSize)..]);
        binding.CopyTo(t[(o + 2 * Wire.AuthSize)..]);
        key.Mac(t, mac);
    }

    /// <summary>Fails with <paramref name="message"/>; the peer is told <paramref name="toPeer"/> (default: the same line), never more.</summary>
    private static void Refuse(PeerConnection c, string message, string? toPeer = null)
    {
        c.TryAbort(toPeer ?? message);
        throw new MigrationException(message);
    }
}
