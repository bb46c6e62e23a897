using System.Diagnostics;
using System.Net.Sockets;

namespace Faultline.Migration.Transport;

/// <summary>
/// The baseline for "total time vs the socket": streams <c>bytes</c> from one thread to another over the same kind
/// of connection a migration uses (loopback TCP with TCP_NODELAY, or Unix), in 128 KiB sends into a 2 MiB
/// receive buffer, touching every byte on both ends as little as possible (no checksums, no pages installed).
/// </summary>
public static class RawStream
{
    public static TimeSpan Measure(ulong bytes, MigrationAddress? address = null, TimeSpan linkDelay = default)
    {
        using var listener = new MigrationListener(address ?? MigrationAddress.Parse("127.0.0.1:0"));
        Exception? error = null;
        var receiver = new Thread(() =>
        {
            try
            {
                using var ch = listener.Accept(TimeSpan.FromSeconds(10));
                var buf = GC.AllocateUninitializedArray<byte>(2 << 20, pinned: true);
                ulong got = 0;
                while (got < bytes)
                {
                    var n = ch.Receive(buf);
                    if (n == 0) throw new MigrationException("raw stream closed early");
                    got += (ulong)n;
                }
                ch.Send([1]);
            }
            catch (Exception e) { error = e; }
        }) { Name = "fl-raw-rx", IsBackground = true };
        receiver.Start();
        IByteChannel sender = listener.Address.Connect(TimeSpan.FromSeconds(10));
        if (linkDelay > TimeSpan.Zero) sender = new DelayLineChannel(sender, linkDelay);
        using (sender)
        {
            var chunk = GC.AllocateArray<byte>(128 * 1024, pinned: true);
            Random.Shared.NextBytes(chunk);
            var sw = Stopwatch.StartNew();
            for (ulong sent = 0; sent < bytes; sent += (ulong)chunk.Length)
                sender.Send(chunk.AsSpan(0, (int)Math.Min((ulong)chunk.Length, bytes - sent)));
            Span<byte> ack = stackalloc byte[1];
            if (sender.Receive(ack) != 1) throw new MigrationException("raw stream: no acknowledgement");
            sw.Stop();
            receiver.Join();
            if (error is not null) throw error;
            return sw.Elapsed;
        }
    }
}
