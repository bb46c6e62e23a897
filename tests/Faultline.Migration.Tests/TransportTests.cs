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
}
