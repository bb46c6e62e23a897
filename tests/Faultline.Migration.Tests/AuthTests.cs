using Faultline.Kvm.Io;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Security;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>
/// Who may connect: a source with a key serves only a destination that proves the same key (and, with TLS, over
/// TLS); every other peer gets one line, no Layout and no page, and the source goes on listening. Real sockets, real VMs.
/// </summary>
public sealed class AuthTests
{
    /// <summary>Records every byte a channel received, to check afterwards which frames a refused peer was sent.</summary>
    private sealed class TapChannel(IByteChannel inner) : IByteChannel
    {
        private readonly MemoryStream _got = new();
        public byte[] Received { get { lock (_got) return _got.ToArray(); } }
        public void Send(ReadOnlySpan<byte> data) => inner.Send(data);
        public void SendGather(IoVecList data) => inner.SendGather(data);
        public int Receive(Span<byte> buffer)
        {
            var n = inner.Receive(buffer);
            lock (_got) _got.Write(buffer[..n]);
            return n;
        }
        public TimeSpan? ReceiveTimeout { get => inner.ReceiveTimeout; set => inner.ReceiveTimeout = value; }
        public void Shutdown() => inner.Shutdown();
        public void Dispose() => inner.Dispose();
        public long BytesSent => inner.BytesSent;
        public long BytesReceived => inner.BytesReceived;
        public string Peer => inner.Peer;
        public TlsChannel? Tls => inner.Tls;
    }

    /// <summary>The frame types in <paramref name="bytes"/> (what a peer was sent), up to where they end or stop decoding.</summary>
    private static List<FrameType> FramesIn(byte[] bytes)
    {
        var types = new List<FrameType>();
        var reader = new FrameReader(new MemoryChannel(bytes, new Random(1)));
        try { while (true) types.Add(reader.Read().Type); }
        catch (MigrationException) { }
        return types;
    }

    private static readonly FrameType[] Guest = [FrameType.Layout, FrameType.VcpuState, FrameType.Page, FrameType.ZeroPage, FrameType.PageRun, FrameType.Summary];

    /// <summary>A destination that fails with one line; returns it and the frames each of its connections received.</summary>
    private static (string Message, List<FrameType> Frames) Refused(MigrationAddress a, PeerSecurity security)
    {
        var taps = new List<TapChannel>();
        var e = Assert.ThrowsAny<MigrationException>(() => new MigrationDestination(new DestinationOptions(a, PagingMode.Exits)
        {
            Security = security, HandshakeTimeout = TimeSpan.FromSeconds(5),
            WrapChannel = (c, _) => { var t = new TapChannel(c); taps.Add(t); return t; },
        }).Run());
        Assert.DoesNotContain('\n', e.Message);
        return (e.Message, [.. taps.SelectMany(t => FramesIn(t.Received))]);
    }

    private static (MigrationListener Listener, Thread Thread, Func<Exception?> Error) Serve(MigrationSource src)
    {
        var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        Exception? se = null;
        var t = new Thread(() => { try { src.Serve(listener); } catch (Exception e) { se = e; } }) { IsBackground = true };
        t.Start();
        return (listener, t, () => se);
    }

    private static void WaitForLines(ListLogger log, int n)
    {
        for (var i = 0; i < 500 && log.Lines.Length < n; i++) Thread.Sleep(20);
    }

    [KvmFact]
    public void An_unauthenticated_and_a_wrongly_keyed_peer_get_no_page_and_the_source_then_serves_a_keyed_destination()
    {
        var before = ProcessResources.Now();
        var key = PeerKey.Generate();
        var log = new ListLogger();
        using var src = MigrationSource.Create(new SourceOptions(2, 8 * MiB) { Logger = log, PeerHelloTimeout = TimeSpan.FromSeconds(2), Security = new PeerSecurity(key, tls: false) });
        var (listener, t, error) = Serve(src);
        using (listener)
        {
            var (noKey, noKeyFrames) = Refused(listener.Address, PeerSecurity.None);
            Assert.Equal($"{listener.Address} requires peer authentication: give the source's key with --psk-file", noKey);
            var (wrong, wrongFrames) = Refused(listener.Address, new PeerSecurity(PeerKey.Generate(), tls: false));
            Assert.StartsWith($"authentication failed: {listener.Address} does not hold this end's key", wrong);
            // the unkeyed end sees from the source's Hello that a key is needed and leaves; the source's Abort may come first
            Assert.Equal(FrameType.Hello, noKeyFrames[0]);
            Assert.All(noKeyFrames.Skip(1), f => Assert.Equal(FrameType.Abort, f));
            Assert.Equal([FrameType.Hello, FrameType.AuthChallenge, FrameType.AuthProof], wrongFrames.Take(3));
            Assert.All(Guest, g => Assert.DoesNotContain(g, noKeyFrames.Concat(wrongFrames)));
            WaitForLines(log, 2);
            Assert.True(t.IsAlive, $"the source stopped: {error()?.Message}");
            Assert.False(src.Paused);
            Leaks.OnlyTheSource(before, src);   // the refused destinations built nothing, or released all of it

            var r = new MigrationDestination(new DestinationOptions(listener.Address, PagingMode.Exits) { Security = new PeerSecurity(key, tls: false) }).Run();
            t.Join();
            Assert.Null(error());
            Assert.Equal(r.SourceSha256, r.ReceivedSha256);
            Assert.Equal(0UL, r.GuestMismatches);
            Assert.Equal("psk (HMAC-SHA256)", r.Security);
        }
        src.Dispose();
        Leaks.NoneLeft(before);
        var lines = log.Lines;
        Assert.Equal(2, lines.Length);
        Assert.Matches(@"^refused a connection: 127\.0\.0\.1:\d+ did not authenticate \(it has no key: --psk-file\); still listening on ", lines[0]);
        Assert.Matches(@"^refused a connection: authentication failed: 127\.0\.0\.1:\d+ does not hold this end's key \(a key generated for this run\); still listening on ", lines[1]);
    }

    [KvmFact]
    public void A_TLS_migration_completes_with_matching_digests_after_a_peer_without_TLS_is_refused()
    {
        var before = ProcessResources.Now();
        var key = PeerKey.Generate();
        var log = new ListLogger();
        var security = new PeerSecurity(key, tls: true);
        using var src = MigrationSource.Create(new SourceOptions(2, 8 * MiB) { Logger = log, PeerHelloTimeout = TimeSpan.FromSeconds(2), Security = security });
        var (listener, t, error) = Serve(src);
        using (listener)
        {
            // the right key, no TLS: the source's TLS handshake sees a Faultline Hello in the clear and says so
            var (plain, frames) = Refused(listener.Address, new PeerSecurity(key, tls: false));
            Assert.Equal("peer aborted: this source requires TLS and its key (--tls, --psk-file)", plain);
            Assert.Equal([FrameType.Abort], frames);
            WaitForLines(log, 1);
            Assert.True(t.IsAlive, $"the source stopped: {error()?.Message}");

            var r = new MigrationDestination(new DestinationOptions(listener.Address, PagingMode.Exits) { Security = new PeerSecurity(key, tls: true) }).Run();
            t.Join();
            Assert.Null(error());
            Assert.Equal(r.SourceSha256, r.ReceivedSha256);
            Assert.Equal(0UL, r.GuestMismatches);
            Assert.StartsWith("TLS 1.3 TLS_AES_128_GCM_SHA256", r.Security);
            Assert.Equal((long)r.PagesTotal, r.EngineInstalled);
        }
        src.Dispose();
        Leaks.NoneLeft(before);
        var lines = log.Lines;
        Assert.Single(lines);
        Assert.Matches(@"^refused a connection: 127\.0\.0\.1:\d+ is a Faultline peer without TLS: this end requires TLS \(--tls\); still listening on ", lines[0]);
    }

    [Fact]
    public void A_source_without_TLS_names_a_TLS_client_as_such()
    {
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        Exception? serverError = null;
        var server = new Thread(() =>
        {
            using var ch = listener.Accept(TimeSpan.FromSeconds(5));
            using var c = new PeerConnection(ch, ChannelRole.Main);
            try { c.ExchangeHello(ChannelRole.Source, ChannelRole.Main, 1, TimeSpan.FromSeconds(5)); }
            catch (Exception x) { serverError = x; }
        }) { IsBackground = true };
        server.Start();
        var e = Assert.ThrowsAny<MigrationException>(() => TlsChannel.Client(listener.Address.Connect(TimeSpan.FromSeconds(5)), TimeSpan.FromSeconds(5)));
        server.Join();
        Assert.Equal($"{listener.Address} answered without TLS: it does not run with --tls", e.Message);
        Assert.IsType<MigrationException>(serverError);
        Assert.Contains("bad frame sync 0x0316: it speaks TLS, this end runs without --tls", serverError.Message);
    }
}
