using System.Buffers;
using Faultline.Kvm.Io;
using Faultline.Migration.Protocol;
using Faultline.Migration.Security;

namespace Faultline.Migration.Transport;

/// <summary>
/// One connection of a migration session: a channel (maybe behind an emulated delay line), its frame reader, and
/// frame sending. Send is thread-safe; reading is for one thread.
/// </summary>
public sealed class PeerConnection : IDisposable
{
    private int _disposed;

    public IByteChannel Channel { get; }
    public FrameReader Reader { get; }
    public ChannelRole Role { get; }
    public string Peer => Channel.Peer;
    /// <summary>The TLS session under this connection, if any.</summary>
    public TlsChannel? Tls => Channel.Tls;

    public PeerConnection(IByteChannel channel, ChannelRole role, TimeSpan linkDelay = default)
    {
        // the urgent channel's emulated link carries demands and their pages: its pump runs with the demand path; the
        // main channel's pump spins through every bulk frame's delay (an emulation cost a real link doesn't have), at 0
        Channel = linkDelay > TimeSpan.Zero
            ? new DelayLineChannel(channel, linkDelay, demandPath: role == ChannelRole.Urgent)
            : channel;
        Role = role;
        Reader = new FrameReader(Channel);
    }

    public void Send(FrameType type, byte flags, ReadOnlySpan<byte> payload)
    {
        var size = Wire.HeaderSize + payload.Length;
        if (size <= 512)
        {
            Span<byte> b = stackalloc byte[size];
            FrameCodec.Write(b, type, flags, payload);
            Channel.Send(b);
            return;
        }
        var rented = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            FrameCodec.Write(rented, type, flags, payload);
            Channel.Send(rented.AsSpan(0, size));
        }
        finally { ArrayPool<byte>.Shared.Return(rented); }
    }

    /// <summary>Sends pre-encoded frames.</summary>
    public void SendRaw(ReadOnlySpan<byte> frames) => Channel.Send(frames);

    /// <summary>Sends pre-encoded frames whose bytes are spread over <paramref name="frames"/>' segments (page data where it lies); empties the list.</summary>
    public void SendGather(IoVecList frames) => Channel.SendGather(frames);

    /// <summary>Reads the next frame; an Abort from the peer becomes a <see cref="MigrationException"/> carrying its message.</summary>
    public Frame Read()
    {
        var f = Reader.Read();
        if (f.Type == FrameType.Abort) throw new PeerAbortedException(f.AbortMessage);
        return f;
    }

    /// <summary>Reads the next frame, which must be of <paramref name="expected"/> type, within <paramref name="timeout"/>.</summary>
    public Frame Expect(FrameType expected, TimeSpan timeout)
    {
        var old = Channel.ReceiveTimeout;
        Channel.ReceiveTimeout = timeout;
        try
        {
            var f = Read();
            if (f.Type != expected) throw new MigrationException($"protocol error: expected {expected} from {Peer}, got {f.Type}");
            return f;
        }
        finally { Channel.ReceiveTimeout = old; }
    }

    /// <summary>
    /// Sends our Hello and reads the peer's (both ends send first, so neither waits for the other). A version
    /// mismatch or a wrong role fails both ends: each checks, and we also tell the peer why. Then the peers prove
    /// their key to each other (<see cref="PeerAuth.Prove"/>, with <paramref name="security"/>'s key; without one,
    /// only a peer that expects no key passes): no frame after this one reaches a peer that has not proven it.
    /// </summary>
    public HelloMessage ExchangeHello(ChannelRole ourRole, ChannelRole expectedPeerRole, ulong nonce, TimeSpan timeout, PeerSecurity? security = null)
    {
        Span<byte> h = stackalloc byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ourRole, nonce, security?.Flags ?? HelloFlags.None).Encode(h);
        Send(FrameType.Hello, 0, h);
        var peer = HelloMessage.Decode(Expect(FrameType.Hello, timeout).Payload, Peer);
        if (peer.Version != Wire.Version)
        {
            var m = $"protocol version mismatch: this end speaks version {Wire.Version}, {Peer} speaks version {peer.Version}";
            TryAbort(m);
            throw new MigrationException(m);
        }
        if (peer.Role != expectedPeerRole)
        {
            var m = $"{Peer} opened a {peer.Role} channel where a {expectedPeerRole} channel was expected";
            TryAbort(m);
            throw new MigrationException(m);
        }
        PeerAuth.Prove(this, security?.Key, ourRole, peer, ourRole == ChannelRole.Source ? nonce : peer.Nonce, timeout);
        return peer;
    }

    /// <summary>How long telling a peer why we stop may take: a dead link must not hold up the end of a migration.</summary>
    public static readonly TimeSpan AbortBound = TimeSpan.FromMilliseconds(100);

    /// <summary>Best effort, within <see cref="AbortBound"/>: tells the peer why we stop. Never throws.</summary>
    public void TryAbort(string message) => TryAbort(message, this);

    /// <summary>
    /// Best effort: tells the peer on each of <paramref name="connections"/> (nulls skipped) why we stop, all within
    /// <see cref="AbortBound"/>. A send that is still blocked then (a full send buffer on a dead link, a send lock held
    /// by a thread stuck in its own send) is ended by shutting every one of them down, which the caller is about to do
    /// anyway. Never throws.
    /// </summary>
    public static void TryAbort(string message, params PeerConnection?[] connections)
    {
        using var watchdog = new Timer(static all =>
        {
            foreach (var c in (PeerConnection?[])all!) c?.Shutdown();
        }, connections, AbortBound, Timeout.InfiniteTimeSpan);
        var bytes = System.Text.Encoding.UTF8.GetBytes(message.Length > 1000 ? message[..1000] : message);
        foreach (var c in connections)
        {
            try { c?.Send(FrameType.Abort, 0, bytes); }
            catch (Exception) { /* the connection is gone already */ }
        }
        foreach (var c in connections)
        {
            try { c?.Flush(); }
            catch (Exception) { /* the connection is gone already */ }
        }
    }

    /// <summary>Waits until an emulated delay line has written everything queued (no-op on a plain socket).</summary>
    public void Flush()
    {
        if (Channel is DelayLineChannel d) d.Flush();
    }

    public void Shutdown() => Channel.Shutdown();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Channel.Dispose();
    }
}
