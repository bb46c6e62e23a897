using System.Net;
using System.Net.Sockets;

namespace Faultline.Migration.Transport;

/// <summary>A listen or connect address: "HOST:PORT", "tcp:HOST:PORT", ":PORT" (loopback) or "unix:PATH".</summary>
public sealed record MigrationAddress(EndPoint EndPoint, string Text)
{
    public bool IsUnix => EndPoint is UnixDomainSocketEndPoint;

    public static MigrationAddress Parse(string text)
    {
        var s = text.Trim();
        if (s.StartsWith("unix:", StringComparison.Ordinal))
        {
            var path = s[5..];
            if (path.Length == 0) throw new UsageException($"address '{text}': unix: needs a path");
            return new MigrationAddress(new UnixDomainSocketEndPoint(path), s);
        }
        if (s.StartsWith("tcp:", StringComparison.Ordinal)) s = s[4..];
        var colon = s.LastIndexOf(':');
        if (colon < 0 || !int.TryParse(s[(colon + 1)..], out var port) || port is < 0 or > 65535)
            throw new UsageException($"address '{text}' is not HOST:PORT, tcp:HOST:PORT or unix:PATH");
        var host = s[..colon].Trim('[', ']');
        IPAddress ip;
        if (host.Length == 0 || host == "localhost") ip = IPAddress.Loopback;
        else if (!IPAddress.TryParse(host, out ip!))
            throw new UsageException($"address '{text}': '{host}' is not an IP address (use 127.0.0.1 or localhost)");
        return new MigrationAddress(new IPEndPoint(ip, port), $"{(ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString())}:{port}");
    }

    public override string ToString() => Text;

    internal Socket NewSocket() => IsUnix
        ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        : new Socket(EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);

    /// <summary>
    /// Connects, retrying while nothing listens yet, for at most <paramref name="timeout"/>. With a plain blocking
    /// connect (bounded by SO_SNDTIMEO, which Linux applies to connect), never an asynchronous or non-blocking one: on
    /// a socket whose descriptor once went non-blocking, .NET runs every later synchronous receive through its epoll
    /// thread, a normal-priority thread that must wake and get a CPU before the receiver does — one more hop on every
    /// demand reply (measured: the reply's hop to the destination's urgent receiver, see docs/migration.md).
    /// </summary>
    public SocketChannel Connect(TimeSpan timeout, CancellationToken ct = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            var s = NewSocket();
            try
            {
                s.SendTimeout = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalMilliseconds, 1, int.MaxValue);
                s.Connect(EndPoint);
                s.SendTimeout = 0;
                return new SocketChannel(s, Text);
            }
            catch (SocketException e)
            {
                s.Dispose();
                var refused = e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable;
                var timedOut = e.SocketErrorCode is SocketError.InProgress or SocketError.WouldBlock or SocketError.TimedOut;
                if (!refused || DateTime.UtcNow >= deadline)
                    throw new MigrationException($"cannot connect to {Text}: {(timedOut ? "timed out" : e.SocketErrorCode.ToString())}");
                Thread.Sleep(20);
            }
        }
    }
}
