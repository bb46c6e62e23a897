using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Tests;

public sealed class TransportTests
{
    [Theory]
    [InlineData("127.0.0.1:0")]
    [InlineData("unix")]
    public void Connected_and_accepted_channels_block_in_the_kernel_and_carry_bytes(string where)
    {
        var address = MigrationAddress.Parse(where == "unix" ? $"unix:/tmp/fl-transport-{Environment.ProcessId}.sock" : where);
        using var listener = new MigrationListener(address);
        SocketChannel? accepted = null;
        var t = new Thread(() => accepted = listener.Accept(TimeSpan.FromSeconds(10))) { IsBackground = true };
        t.Start();
        using var connected = listener.Address.Connect(TimeSpan.FromSeconds(10));
        t.Join();
        using var a = accepted!;
        // a socket that ever ran an async operation stays O_NONBLOCK, and every blocking Receive then goes through the
        // runtime's epoll thread and the thread pool: neither end may be like that
        Assert.True(connected.BlocksInKernel, "the connected socket is O_NONBLOCK");
        Assert.True(a.BlocksInKernel, "the accepted socket is O_NONBLOCK");
        connected.Send("ping"u8);
        var buf = new byte[4];
        var got = 0;
        while (got < 4) got += a.Receive(buf.AsSpan(got));
        Assert.Equal("ping"u8.ToArray(), buf);
    }

    [Fact]
    public void Accept_gives_up_after_its_timeout_in_one_line()
    {
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        var e = Assert.ThrowsAny<MigrationException>(() => listener.Accept(TimeSpan.FromMilliseconds(100)));
        Assert.StartsWith($"no destination connected to {listener.Address} within", e.Message);
    }

    [Fact]
    public void Connect_to_nothing_listening_fails_in_one_line_after_its_timeout()
    {
        int port;
        using (var l = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"))) port = int.Parse(l.Address.Text.Split(':')[1]);
        var e = Assert.ThrowsAny<MigrationException>(() => MigrationAddress.Parse($"127.0.0.1:{port}").Connect(TimeSpan.FromMilliseconds(200)));
        Assert.Equal($"cannot connect to 127.0.0.1:{port}: ConnectionRefused", e.Message);
    }

    [Fact]
    public void The_raw_stream_baseline_moves_every_byte_and_takes_time()
    {
        var t = RawStream.Measure(8UL << 20);
        Assert.True(t > TimeSpan.Zero);
    }

    [Fact]
    public void An_abort_reaches_a_live_peer_and_gives_up_on_a_dead_link_instead_of_blocking()
    {
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        SocketChannel? accepted = null;
        var t = new Thread(() => accepted = listener.Accept(TimeSpan.FromSeconds(10))) { IsBackground = true };
        t.Start();
        using var ours = new PeerConnection(listener.Address.Connect(TimeSpan.FromSeconds(10)), ChannelRole.Main);
        t.Join();
        using var peer = new PeerConnection(accepted!, ChannelRole.Source);

        // a live peer reads it
        ours.TryAbort("the destination was interrupted");
        Assert.Equal("peer aborted: the destination was interrupted", Assert.IsType<PeerAbortedException>(Record.Exception(() => peer.Read())).Message);

        // a peer that reads nothing more: a sender fills both socket buffers and blocks in send, holding the send lock
        Exception? senderError = null;
        var sender = new Thread(() => senderError = Record.Exception(() => ours.SendRaw(new byte[64 << 20]))) { IsBackground = true, Name = "fl-test-send" };
        sender.Start();
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!BlockedInKernel("fl-test-send"))
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(10), "the sender never blocked");
            Thread.Sleep(10);
        }
        var took = System.Diagnostics.Stopwatch.StartNew();
        ours.TryAbort("the destination was interrupted");   // must return: the bound shuts the connection down
        var abortTook = took.Elapsed;
        Assert.True(sender.Join(TimeSpan.FromSeconds(10)), "the blocked sender was not released");
        Assert.IsType<LinkLostException>(senderError);
        Assert.True(abortTook >= PeerConnection.AbortBound - TimeSpan.FromMilliseconds(5), $"gave up after {abortTook.TotalMilliseconds:0} ms, before its bound");
        Assert.True(abortTook < TimeSpan.FromSeconds(5), $"took {abortTook.TotalMilliseconds:0} ms");
    }

    /// <summary>Whether our thread named <paramref name="comm"/> sleeps in the kernel (state S in /proc/self/task/*/stat, a wait channel in wchan).</summary>
    private static bool BlockedInKernel(string comm) => Directory.GetDirectories("/proc/self/task").Any(task =>
    {
        try
        {
            if (File.ReadAllText(Path.Combine(task, "comm")).Trim() != comm) return false;
            var stat = File.ReadAllText(Path.Combine(task, "stat"));
            return stat[(stat.LastIndexOf(')') + 2)..].StartsWith('S') && File.ReadAllText(Path.Combine(task, "wchan")) is not ("" or "0");
        }
        catch (IOException) { return false; }   // the task ended meanwhile
    });
}
