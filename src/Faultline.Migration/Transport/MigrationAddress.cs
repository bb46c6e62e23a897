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

    /// <summary>Connects, retrying while nothing listens yet, for at most <paramref name="timeout"/>.</summary>
    public SocketChannel Connect(TimeSpan timeout, CancellationToken ct = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var s = NewSocket();
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                cts.CancelAfter(TimeSpan.FromSeconds(Math.Max(0.05, (deadline - DateTime.UtcNow).TotalSeconds)));
                s.ConnectAsync(EndPoint, cts.Token).AsTask().GetAwaiter().GetResult();
                return new SocketChannel(s, Text);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                s.Dispose();
                ct.ThrowIfCancellationRequested();
                var refused = e is SocketException { SocketErrorCode: SocketError.ConnectionRefused or SocketError.AddressNotAvailable };
                if (!refused || DateTime.UtcNow >= deadline)
                    throw new MigrationException($"cannot connect to {Text}: {(e is SocketException s2 ? s2.SocketErrorCode.ToString() : "timed out")}");
                Thread.Sleep(20);
            }
        }
    }
}
