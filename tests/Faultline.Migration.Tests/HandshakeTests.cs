using System.Net;
using System.Net.Sockets;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>Peers that are not what they claim: each end says so in one line, and never waits forever.</summary>
public sealed class HandshakeTests
{
    /// <summary>A TCP server on loopback that runs <paramref name="script"/> on the first connection it accepts.</summary>
    private static (MigrationAddress Address, Thread Thread) FakeServer(Action<Socket> script)
    {
        var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        l.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        l.Listen(4);
        var port = ((IPEndPoint)l.LocalEndPoint!).Port;
        var t = new Thread(() =>
        {
            using (l)
            {
                using var s = l.Accept();
                try { script(s); } catch (SocketException) { }
            }
        }) { IsBackground = true };
        t.Start();
        return (MigrationAddress.Parse($"127.0.0.1:{port}"), t);
    }

    private static byte[] Hello(ushort version, ChannelRole role, ulong nonce = 5)
    {
        var h = new byte[HelloMessage.Size];
        new HelloMessage(version, role, nonce).Encode(h);
        return FrameCodec.ToArray(FrameType.Hello, 0, h);
    }

    private static byte[] ReadSome(Socket s)
    {
        s.ReceiveTimeout = 5000;
        var buf = new byte[4096];
        var all = new List<byte>();
        try { int n; while ((n = s.Receive(buf)) > 0) all.AddRange(buf.AsSpan(0, n).ToArray()); }
        catch (SocketException) { }
        return [.. all];
    }

    [Fact]
    public void A_source_speaking_another_version_is_refused_and_told_why()
    {
        byte[] got = [];
        var (addr, t) = FakeServer(s => { s.Send(Hello(99, ChannelRole.Source)); got = ReadSome(s); });
        var e = Assert.Throws<MigrationException>(() => new MigrationDestination(new DestinationOptions(addr) { HandshakeTimeout = TimeSpan.FromSeconds(5) }).Run());
        t.Join();
        Assert.Equal($"protocol version mismatch: this end speaks version {Wire.Version}, {addr} speaks version 99", e.Message);
        // the fake source received our Hello, then an Abort carrying the same sentence
        var reader = new FrameReader(new MemoryChannel(got, new Random(1)));
        Assert.Equal(FrameType.Hello, reader.Read().Type);
        var abort = reader.Read();
        Assert.Equal(FrameType.Abort, abort.Type);
        Assert.Contains("protocol version mismatch", abort.AbortMessage);
    }

    [Fact]
    public void A_server_that_is_not_Faultline_is_named_as_such()
    {
        var (addr, t) = FakeServer(s => { s.Send("SSH-2.0-OpenSSH_9.6\r\n"u8); ReadSome(s); });
        var e = Assert.Throws<MigrationException>(() => new MigrationDestination(new DestinationOptions(addr)).Run());
        t.Join();
        Assert.Equal($"{addr} is not a Faultline migration peer (bad frame sync 0x5353)", e.Message);
    }

    [Fact]
    public void A_silent_server_times_out_instead_of_hanging()
    {
        var (addr, t) = FakeServer(s => ReadSome(s));
        var e = Assert.Throws<MigrationException>(() =>
            new MigrationDestination(new DestinationOptions(addr) { HandshakeTimeout = TimeSpan.FromMilliseconds(500) }).Run());
        t.Join();
        Assert.Equal($"no data from {addr} for 0.5 s", e.Message);
    }

    [Fact]
    public void Nobody_listening_is_a_one_line_error()
    {
        var e = Assert.Throws<MigrationException>(() =>
            new MigrationDestination(new DestinationOptions(MigrationAddress.Parse("127.0.0.1:1")) { HandshakeTimeout = TimeSpan.FromMilliseconds(300) }).Run());
        Assert.StartsWith("cannot connect to 127.0.0.1:1", e.Message);
    }

    [KvmFact]
    public void A_client_that_is_not_Faultline_is_refused_by_the_source_which_keeps_running()
    {
        using var src = MigrationSource.Create(new SourceOptions(1, 1 * MiB));
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        Exception? se = null;
        var t = new Thread(() => { try { src.Serve(listener); } catch (Exception e) { se = e; } });
        t.Start();
        using (var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            c.Connect(listener.Address.EndPoint);
            c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            ReadSome(c);
        }
        t.Join();
        var e = Assert.IsType<MigrationException>(se);
        Assert.Matches(@"^127\.0\.0\.1:\d+ is not a Faultline migration peer \(bad frame sync 0x4547\)$", e.Message);
        Assert.False(src.Paused);
    }

    [KvmFact]
    public void A_destination_speaking_another_version_fails_the_source_before_it_pauses()
    {
        using var src = MigrationSource.Create(new SourceOptions(1, 1 * MiB));
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        Exception? se = null;
        var t = new Thread(() => { try { src.Serve(listener); } catch (Exception e) { se = e; } });
        t.Start();
        byte[] got;
        using (var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            c.Connect(listener.Address.EndPoint);
            c.Send(Hello(1, ChannelRole.Main));   // a version-1 destination: it would not understand PageRun frames
            got = ReadSome(c);
        }
        t.Join();
        var e = Assert.IsType<MigrationException>(se);
        Assert.Matches($@"^protocol version mismatch: this end speaks version {Wire.Version}, 127\.0\.0\.1:\d+ speaks version 1$", e.Message);
        Assert.False(src.Paused);
        var reader = new FrameReader(new MemoryChannel(got, new Random(1)));
        Assert.Equal(FrameType.Hello, reader.Read().Type);
        Assert.Equal(FrameType.Abort, reader.Read().Type);
    }
}
