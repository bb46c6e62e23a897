using Faultline.Migration.Protocol;
using Faultline.Migration.Security;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Tests;

/// <summary>
/// The key's challenge–response (<see cref="PeerAuth.Prove"/>) against an attacker without the key, on real loopback
/// sockets: a recorded proof replayed, a challenge reflected on the same connection, and the source's own proof
/// obtained on a second connection and offered back on the first: each refused.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PeerAuthTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);
    private const ulong Nonce = 0x5eed;

    /// <summary>A source's side of one connection: Hello and proof as <see cref="Source.PeerGate"/> does it; returns what it threw (null: the peer passed).</summary>
    private sealed class SourceEnd : IDisposable
    {
        private readonly MigrationListener _listener = new(MigrationAddress.Parse("127.0.0.1:0"));
        private readonly Thread _thread;
        private Exception? _error;
        public MigrationAddress Address => _listener.Address;

        public SourceEnd(PeerKey key)
        {
            _thread = new Thread(() =>
            {
                try
                {
                    using var c = new PeerConnection(_listener.Accept(T), ChannelRole.Main);
                    c.ExchangeHello(ChannelRole.Source, ChannelRole.Main, Nonce, T, new PeerSecurity(key, tls: false));
                }
                catch (Exception e) { _error = e; }
            }) { IsBackground = true };
            _thread.Start();
        }

        public Exception? Result()
        {
            Assert.True(_thread.Join(T * 2), "the source end did not finish");
            return _error;
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>An attacker's connection: sends a Hello that claims a key, reads the source's Hello.</summary>
    private static PeerConnection Attacker(MigrationAddress a)
    {
        var c = new PeerConnection(a.Connect(T), ChannelRole.Main);
        Span<byte> h = stackalloc byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 0, HelloFlags.Authenticates).Encode(h);
        c.Send(FrameType.Hello, 0, h);
        Assert.Equal(FrameType.Hello, c.Expect(FrameType.Hello, T).Type);
        return c;
    }

    private static byte[] Read(PeerConnection c, FrameType type) => c.Expect(type, T).Payload.ToArray();

    /// <summary>Records what a channel sent.</summary>
    private sealed class Recorder(IByteChannel inner) : IByteChannel
    {
        public MemoryStream Sent { get; } = new();
        public void Send(ReadOnlySpan<byte> data) { Sent.Write(data); inner.Send(data); }
        public int Receive(Span<byte> buffer) => inner.Receive(buffer);
        public TimeSpan? ReceiveTimeout { get => inner.ReceiveTimeout; set => inner.ReceiveTimeout = value; }
        public void Shutdown() => inner.Shutdown();
        public void Dispose() => inner.Dispose();
        public long BytesSent => inner.BytesSent;
        public long BytesReceived => inner.BytesReceived;
        public string Peer => inner.Peer;
    }

    [Fact]
    public void The_same_key_passes_both_ways_and_a_replayed_proof_is_refused()
    {
        var key = PeerKey.Generate();
        byte[] recorded;
        using (var s = new SourceEnd(key))
        {
            var rec = new Recorder(s.Address.Connect(T));
            using var c = new PeerConnection(rec, ChannelRole.Main);
            var hello = c.ExchangeHello(ChannelRole.Main, ChannelRole.Source, 0, T, new PeerSecurity(key, tls: false));
            Assert.Equal(Nonce, hello.Nonce);
            Assert.Null(s.Result());
            recorded = rec.Sent.ToArray();   // Hello, AuthChallenge, AuthProof of a good destination
        }
        using (var s = new SourceEnd(key))
        {
            using var ch = s.Address.Connect(T);
            ch.Send(recorded);   // replayed verbatim: the proof answers an old challenge
            var e = Assert.IsType<MigrationException>(s.Result());
            Assert.StartsWith("authentication failed: 127.0.0.1:", e.Message);
            Assert.Contains("does not hold this end's key", e.Message);
        }
    }

    [Fact]
    public void A_challenge_reflected_on_the_same_connection_is_refused()
    {
        using var s = new SourceEnd(PeerKey.Generate());
        using var c = Attacker(s.Address);
        var challenge = Read(c, FrameType.AuthChallenge);
        c.Send(FrameType.AuthChallenge, 0, challenge);
        var e = Assert.IsType<MigrationException>(s.Result());
        Assert.Matches(@"^authentication failed: 127\.0\.0\.1:\d+ reflected this end's challenge$", e.Message);
        Assert.Equal("peer aborted: authentication failed", Assert.ThrowsAny<MigrationException>(() => c.Read()).Message);
    }

    [Fact]
    public void The_sources_own_proof_from_a_second_connection_does_not_pass_on_the_first()
    {
        var key = PeerKey.Generate();
        using var first = new SourceEnd(key);
        using var second = new SourceEnd(key);   // the same key and session nonce: the same source, a second door
        using var a = Attacker(first.Address);
        var c1 = Read(a, FrameType.AuthChallenge);
        using var b = Attacker(second.Address);
        var c2 = Read(b, FrameType.AuthChallenge);
        // on the second connection, ask the source to answer its own first challenge, offering its second one as ours
        b.Send(FrameType.AuthChallenge, 0, c1);
        var sourcesAnswer = Read(b, FrameType.AuthProof);   // HMAC(key, source → main, nonce, c1, c2)
        // on the first, offer c2 as our challenge and the source's own answer as our proof: only the roles differ
        a.Send(FrameType.AuthChallenge, 0, c2);
        Read(a, FrameType.AuthProof);
        a.Send(FrameType.AuthProof, 0, sourcesAnswer);
        var e = Assert.IsType<MigrationException>(first.Result());
        Assert.Contains("does not hold this end's key", e.Message);
        b.Send(FrameType.AuthProof, 0, new byte[Wire.AuthSize]);
        Assert.IsType<MigrationException>(second.Result());
    }

    [Fact]
    public void Key_files_others_can_read_that_are_short_or_missing_are_refused_with_one_line()
    {
        var dir = Directory.CreateTempSubdirectory("fl-key-");
        try
        {
            var open = Path.Combine(dir.FullName, "open");
            File.WriteAllText(open, new string('k', 64));
            File.SetUnixFileMode(open, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            Assert.Equal($"--psk-file {open}: the key is readable or writable by others (mode 0644); chmod 600 it",
                Assert.Throws<UsageException>(() => PeerKey.FromFile(open)).Message);
            var shortKey = Path.Combine(dir.FullName, "short");
            PeerKeyFile(shortKey, "0123456789\n");
            Assert.StartsWith($"--psk-file {shortKey}: 10 bytes is too short for a key (at least 16",
                Assert.Throws<UsageException>(() => PeerKey.FromFile(shortKey)).Message);
            Assert.Equal($"--psk-file {dir.FullName}/none: no such file", Assert.Throws<UsageException>(() => PeerKey.FromFile(Path.Combine(dir.FullName, "none"))).Message);
            var good = Path.Combine(dir.FullName, "good");
            PeerKey.Generate().WriteTo(good);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(good));
            Assert.Equal($"key file {good}", PeerKey.FromFile(good).Origin);
        }
        finally { dir.Delete(recursive: true); }
    }

    private static void PeerKeyFile(string path, string text)
    {
        File.WriteAllText(path, text);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }
}
