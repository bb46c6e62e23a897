using System.Net.Sockets;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Io;

namespace Faultline.Migration.Transport;

/// <summary>A connected TCP (TCP_NODELAY) or Unix stream socket as an <see cref="IByteChannel"/>.</summary>
public sealed class SocketChannel : IByteChannel
{
    private readonly Socket _socket;
    private readonly SafeSocketHandle _handle;
    private readonly Lock _send = new();
    private long _sent, _received;
    private int _disposed;

    public string Peer { get; }
    public long BytesSent => Interlocked.Read(ref _sent);
    public long BytesReceived => Interlocked.Read(ref _received);

    public SocketChannel(Socket socket, string peer)
    {
        _socket = socket;
        _handle = socket.SafeHandle;
        Peer = peer;
        if (socket.ProtocolType == ProtocolType.Tcp) socket.NoDelay = true;
    }

    /// <summary>Whether the socket blocks in the kernel (no O_NONBLOCK on its fd): see <see cref="MigrationAddress.Connect"/>.</summary>
    internal bool BlocksInKernel
    {
        get
        {
            var flags = File.ReadAllLines($"/proc/self/fdinfo/{_socket.Handle}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
            return (Convert.ToInt32(flags[6..].Trim(), 8) & 0x800) == 0; // O_NONBLOCK = 04000
        }
    }

    /// <summary>SO_RCVTIMEO; the value is kept here too, so reading it costs no getsockopt (the frame reader asks per partial frame).</summary>
    public TimeSpan? ReceiveTimeout
    {
        get => _receiveTimeout;
        set
        {
            _socket.ReceiveTimeout = value is null ? 0 : (int)Math.Max(1, value.Value.TotalMilliseconds);
            _receiveTimeout = value is null ? null : TimeSpan.FromMilliseconds(Math.Max(1, value.Value.TotalMilliseconds));
        }
    }
    private TimeSpan? _receiveTimeout;

    public void Send(ReadOnlySpan<byte> data)
    {
        lock (_send)
        {
            try
            {
                while (!data.IsEmpty)
                {
                    var n = _socket.Send(data, SocketFlags.None);
                    data = data[n..];
                    _sent += n;
                }
            }
            catch (SocketException e) { throw Lost(e); }
            catch (ObjectDisposedException) { throw new LinkLostException($"connection to {Peer} is closed"); }
        }
    }

    /// <summary>
    /// sendmsg(2) on the socket's fd with the list's segments, under the same lock as <see cref="Send"/>. The fd blocks
    /// in the kernel (<see cref="BlocksInKernel"/>), so a call returns short only when a signal interrupts it after
    /// some bytes: the list advances past them and the rest goes next. EINTR (nothing sent) is retried.
    /// </summary>
    public void SendGather(IoVecList data)
    {
        lock (_send)
        {
            try
            {
                while (!data.IsEmpty)
                {
                    var n = data.SendOnce(_handle, out var errno);
                    if (n >= 0) { _sent += n; continue; }
                    if (errno == Errno.EINTR) continue;
                    // never on this blocking fd with no send timeout; would the fd be O_NONBLOCK, wait for room as Send does
                    if (errno == Errno.EAGAIN) { _socket.Poll(-1, SelectMode.SelectWrite); continue; }
                    throw Lost(errno);
                }
                data.Clear();
            }
            catch (SocketException e) { throw Lost(e); }
            catch (ObjectDisposedException) { throw new LinkLostException($"connection to {Peer} is closed"); }
        }
    }

    public int Receive(Span<byte> buffer)
    {
        try
        {
            var n = _socket.Receive(buffer, SocketFlags.None);
            Interlocked.Add(ref _received, n);
            return n;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock)
        {
            throw new LinkLostException($"no data from {Peer} for {ReceiveTimeout?.TotalSeconds:0.#} s");
        }
        catch (SocketException e) { throw Lost(e); }
        catch (ObjectDisposedException) { return 0; }
    }

    private LinkLostException Lost(SocketException e) => e.SocketErrorCode switch
    {
        SocketError.Shutdown or SocketError.OperationAborted or SocketError.Interrupted => new LinkLostException($"connection to {Peer} was shut down"),
        _ => new LinkLostException($"connection to {Peer} lost ({e.SocketErrorCode})", e),
    };

    /// <summary>The same messages as <see cref="Lost(SocketException)"/> for the errno sendmsg returned (EPIPE: .NET's SocketError.Shutdown).</summary>
    private LinkLostException Lost(int errno) => errno switch
    {
        Errno.EPIPE => new LinkLostException($"connection to {Peer} was shut down"),
        Errno.ECONNRESET => new LinkLostException($"connection to {Peer} lost ({SocketError.ConnectionReset})"),
        Errno.ENOTCONN => new LinkLostException($"connection to {Peer} lost ({SocketError.NotConnected})"),
        _ => new LinkLostException($"connection to {Peer} lost (sendmsg: {Errno.Describe(errno)})"),
    };

    public void Shutdown()
    {
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Shutdown();
        _socket.Dispose();
    }
}
