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
        var e = Assert.ThrowsAny<MigrationException>(() => new MigrationDestination(new DestinationOptions(addr) { HandshakeTimeout = TimeSpan.FromSeconds(5) }).Run());
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
        var e = Assert.ThrowsAny<MigrationException>(() => new MigrationDestination(new DestinationOptions(addr)).Run());
        t.Join();
        Assert.Equal($"{addr} is not a Faultline migration peer (bad frame sync 0x5353)", e.Message);
    }

    [Fact]
    public void A_silent_server_times_out_instead_of_hanging()
    {
        var (addr, t) = FakeServer(s => ReadSome(s));
        var e = Assert.ThrowsAny<MigrationException>(() =>
            new MigrationDestination(new DestinationOptions(addr) { HandshakeTimeout = TimeSpan.FromMilliseconds(500) }).Run());
        t.Join();
        Assert.Equal($"no data from {addr} for 0.5 s", e.Message);
    }

    [Fact]
    public void Nobody_listening_is_a_one_line_error()
    {
        var e = Assert.ThrowsAny<MigrationException>(() =>
            new MigrationDestination(new DestinationOptions(MigrationAddress.Parse("127.0.0.1:1")) { HandshakeTimeout = TimeSpan.FromMilliseconds(300) }).Run());
        Assert.StartsWith("cannot connect to 127.0.0.1:1", e.Message);
    }

    [Fact]
    public void A_second_listener_on_the_same_port_fails_with_one_line()
    {
        using var first = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        var e = Assert.ThrowsAny<MigrationException>(() => new MigrationListener(first.Address));
        Assert.Equal($"cannot listen on {first.Address}: another process listens there (address in use)", e.Message);
        // and the first one still gets every connection
        using var c = first.Address.Connect(TimeSpan.FromSeconds(5));
        using var accepted = first.Accept(TimeSpan.FromSeconds(5));
        Assert.NotNull(accepted);
    }

    /// <summary>Serves <paramref name="src"/> on its own thread; a refused peer is logged into <paramref name="log"/>.</summary>
    private static (MigrationListener Listener, Thread Thread, Func<Exception?> Error, Func<SourceResult?> Result) Serve(MigrationSource src, ListLogger log)
    {
        var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        Exception? se = null;
        SourceResult? sr = null;
        var t = new Thread(() => { try { sr = src.Serve(listener); } catch (Exception e) { se = e; } }) { IsBackground = true };
        t.Start();
        return (listener, t, () => se, () => sr);
    }

    private static SourceOptions Small(ListLogger log) => new(1, 1 * MiB) { Logger = log, PeerHelloTimeout = TimeSpan.FromMilliseconds(500) };

    private static void Stray(MigrationAddress a, ReadOnlySpan<byte> bytes, bool read = true)
    {
        using var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        c.Connect(a.EndPoint);
        if (!bytes.IsEmpty) c.Send(bytes);
        if (read) ReadSome(c);
    }

    private static void WaitForLines(ListLogger log, int n)
    {
        for (var i = 0; i < 500 && log.Lines.Length < n; i++) Thread.Sleep(20);
    }

    [KvmFact]
    public void Clients_that_are_not_Faultline_are_refused_with_one_line_each_and_the_source_then_migrates_to_a_real_destination()
    {
        var before = ProcessResources.Now();
        var log = new ListLogger();
        using var src = MigrationSource.Create(Small(log));
        var (listener, t, error, result) = Serve(src, log);
        using (listener)
        {
            Stray(listener.Address, "hello\n"u8);                              // echo hello | nc
            Stray(listener.Address, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Stray(listener.Address, Hello(1, ChannelRole.Main));               // a version-1 destination
            Stray(listener.Address, default);                                   // connects and says nothing
            WaitForLines(log, 4);
            Assert.True(t.IsAlive, $"the source stopped: {error()?.Message}");
            Assert.False(src.Paused);
            var r = new MigrationDestination(new DestinationOptions(listener.Address, PagingMode.Exits)).Run();
            t.Join();
            Assert.Null(error());
            Assert.Equal(r.SourceSha256, r.ReceivedSha256);
            Assert.Equal(result()!.SourceSha256, r.ReceivedSha256);
        }
        src.Dispose();
        Leaks.NoneLeft(before);
        var lines = log.Lines;
        Assert.Equal(4, lines.Length);
        Assert.All(lines, l => Assert.DoesNotContain('\n', l));
        Assert.All(lines, l => Assert.EndsWith($"; still listening on {listener.Address}", l));
        Assert.Matches(@"^refused a connection: 127\.0\.0\.1:\d+ is not a Faultline migration peer \(bad frame sync 0x6568\)", lines[0]);
        Assert.Matches(@"bad frame sync 0x4547", lines[1]);
        Assert.Matches($@"protocol version mismatch: this end speaks version {Wire.Version}, 127\.0\.0\.1:\d+ speaks version 1", lines[2]);
        Assert.Matches(@"no data from 127\.0\.0\.1:\d+ for 0\.5 s", lines[3]);
    }

    [KvmFact]
    public void A_destination_speaking_another_version_is_told_why_and_the_source_keeps_listening()
    {
        var log = new ListLogger();
        using var src = MigrationSource.Create(Small(log));
        var (listener, t, error, _) = Serve(src, log);
        using (listener)
        {
            byte[] got;
            using (var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                c.Connect(listener.Address.EndPoint);
                c.Send(Hello(1, ChannelRole.Main));   // a version-1 destination: it would not understand PageRun frames
                got = ReadSome(c);
            }
            var reader = new FrameReader(new MemoryChannel(got, new Random(1)));
            Assert.Equal(FrameType.Hello, reader.Read().Type);
            var abort = reader.Read();
            Assert.Equal(FrameType.Abort, abort.Type);
            Assert.Contains("protocol version mismatch", abort.AbortMessage);
            WaitForLines(log, 1);
            Assert.True(t.IsAlive, $"the source stopped: {error()?.Message}");
            Assert.False(src.Paused);
            var r = new MigrationDestination(new DestinationOptions(listener.Address, PagingMode.Exits)).Run();
            t.Join();
            Assert.Null(error());
            Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        }
    }

    [KvmFact]
    public void A_stray_peer_that_connects_between_a_destinations_two_channels_is_refused_and_the_migration_completes()
    {
        var before = ProcessResources.Now();
        var log = new ListLogger();
        using var src = MigrationSource.Create(new SourceOptions(2, 8 * MiB) { Logger = log, PeerHelloTimeout = TimeSpan.FromMilliseconds(500) });
        var (listener, t, error, _) = Serve(src, log);
        using (listener)
        {
            var strays = 0;
            var r = new MigrationDestination(new DestinationOptions(listener.Address, PagingMode.Exits)
            {
                // right after the main channel connected: the stray peers queue ahead of the urgent channel
                WrapChannel = (c, role) =>
                {
                    if (role == ChannelRole.Main)
                    {
                        Stray(listener.Address, "hello\n"u8, read: false);
                        Stray(listener.Address, Hello(Wire.Version, ChannelRole.Urgent, nonce: 12345), read: false);   // another session's urgent channel
                        strays = 2;
                    }
                    return c;
                },
            }).Run();
            t.Join();
            Assert.Equal(2, strays);
            Assert.Null(error());
            Assert.Equal(r.SourceSha256, r.ReceivedSha256);
            Assert.Equal(0UL, r.GuestMismatches);
        }
        src.Dispose();
        Leaks.NoneLeft(before);
        var lines = log.Lines;
        Assert.Equal(2, lines.Length);
        Assert.Contains("is not a Faultline migration peer", lines[0]);
        Assert.Contains("opened an urgent channel for another migration session", lines[1]);
    }
}
