using System.Buffers;
using Faultline.Kvm.Io;

namespace Faultline.Migration.Transport;

/// <summary>
/// One end of a reliable byte stream (a TCP or Unix socket, or a test double). Send is thread-safe and writes all of
/// its bytes in order; Receive is called by one thread. Errors are <see cref="MigrationException"/>s.
/// </summary>
public interface IByteChannel : IDisposable
{
    /// <summary>Writes every byte (blocking), atomically with respect to other Send calls.</summary>
    void Send(ReadOnlySpan<byte> data);

    /// <summary>
    /// Writes every byte left in <paramref name="data"/>, in order (blocking), atomically with respect to Send and other
    /// gather sends; the list is empty on return. A socket sends the segments from where they are (sendmsg); this
    /// default, for channels that cannot, copies them into one buffer and calls <see cref="Send"/>.
    /// </summary>
    void SendGather(IoVecList data)
    {
        var length = checked((int)data.Length);
        var buf = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            data.CopyTo(buf);
            Send(buf.AsSpan(0, length));
            data.Clear();
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>Reads at least one byte; 0 means the peer closed the stream.</summary>
    int Receive(Span<byte> buffer);

    /// <summary>Bounds how long one Receive may wait (null: forever).</summary>
    TimeSpan? ReceiveTimeout { get; set; }

    /// <summary>Ends both directions now: a thread blocked in Receive returns or throws.</summary>
    void Shutdown();

    long BytesSent { get; }
    long BytesReceived { get; }

    /// <summary>The peer, for messages ("127.0.0.1:7000", "unix:/tmp/x").</summary>
    string Peer { get; }

    /// <summary>The TLS session this channel runs over, if any (a wrapper passes its inner channel's on).</summary>
    TlsChannel? Tls => null;
}
