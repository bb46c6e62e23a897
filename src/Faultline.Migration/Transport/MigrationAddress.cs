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
    /// Connects, retrying while nothing listens yet, for at most <paramref name="timeout"/>. The connect is a blocking
    /// one bounded by SO_SNDTIMEO (Linux applies it to connect). No async API and no Blocking = false: a .NET socket
    /// that was ever non-blocking stays O_NONBLOCK for good, and each of its later blocking Receive calls then waits
    /// on the runtime's epoll thread and a thread-pool hop instead of in the kernel (measured: the ".NET Sockets" and
    /// "TP Worker" threads took ~7% of both cores during a 1 GiB post-copy, and every demand reply paid two extra
    /// thread wake-ups).
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
                var timedOut = e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock or SocketError.InProgress;
                if (!refused || DateTime.UtcNow >= deadline)
                    throw new LinkLostException($"cannot connect to {Text}: {(timedOut ? "timed out" : e.SocketErrorCode.ToString())}", e);
                Thread.Sleep(20);
            }
        }
    }
}
