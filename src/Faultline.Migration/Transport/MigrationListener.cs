using System.Net;
using System.Net.Sockets;

namespace Faultline.Migration.Transport;

/// <summary>A listening socket for the source; <see cref="Address"/> is the bound address (port 0 resolved).</summary>
public sealed class MigrationListener : IDisposable
{
    private const int SolSocket = 1, SoReuseAddr = 2;   // <asm-generic/socket.h>
    private readonly Socket _socket;
    private readonly string? _unixPath;

    public MigrationAddress Address { get; }

    public MigrationListener(MigrationAddress address)
    {
        _socket = address.NewSocket();
        try
        {
            if (address.IsUnix)
            {
                _unixPath = address.Text[5..];
                if (File.Exists(_unixPath)) File.Delete(_unixPath);
            }
            // SO_REUSEADDR only (a port in TIME_WAIT can be taken again), never SO_REUSEPORT: .NET's ReuseAddress sets
            // both on Linux, and with SO_REUSEPORT a second listener shares the port and takes an arbitrary half of
            // the connections. Exclusive: a second source on this port fails with EADDRINUSE.
            else _socket.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
            _socket.Bind(address.EndPoint);
            _socket.Listen(4);
        }
        catch (SocketException e)
        {
            _socket.Dispose();
            throw new MigrationException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                ? $"cannot listen on {address}: another process listens there (address in use)"
                : $"cannot listen on {address}: {e.SocketErrorCode}", e);
        }
        Address = _socket.LocalEndPoint is IPEndPoint ip
            ? new MigrationAddress(ip, $"{ip.Address}:{ip.Port}")
            : address;
    }

    /// <summary>
    /// Accepts one connection within <paramref name="timeout"/> (null: wait until cancelled), polling the blocking
    /// listener (no async API: see <see cref="MigrationAddress.Connect"/>), so the accepted socket is blocking.
    /// </summary>
    public SocketChannel Accept(TimeSpan? timeout, CancellationToken ct = default)
    {
        var deadline = timeout is { } t ? DateTime.UtcNow + t : DateTime.MaxValue;
        try
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    throw new MigrationException($"no destination connected to {Address} within {timeout?.TotalSeconds:0.#} s");
                if (!_socket.Poll((int)Math.Clamp(left.TotalMicroseconds, 1, 50_000), SelectMode.SelectRead)) continue;
                var s = _socket.Accept();
                var peer = s.RemoteEndPoint is IPEndPoint ip ? $"{ip.Address}:{ip.Port}" : $"unix:{_unixPath}";
                return new SocketChannel(s, peer);
            }
        }
        catch (SocketException e) { throw new MigrationException($"accept on {Address} failed: {e.SocketErrorCode}", e); }
        catch (ObjectDisposedException) { throw new MigrationException($"accept on {Address} failed: the listener is closed"); }
    }

    public void Dispose()
    {
        _socket.Dispose();
        if (_unixPath is not null) try { File.Delete(_unixPath); } catch (IOException) { }
    }
}
