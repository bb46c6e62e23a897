using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Faultline.Kvm.Io;
using Faultline.Migration.Protocol;

namespace Faultline.Migration.Transport;

/// <summary>
/// TLS 1.3 (<see cref="SslStream"/>, synchronous: the socket underneath stays blocking in the kernel) over another
/// channel, normally a <see cref="SocketChannel"/>. SslStream has no gather write, so <see cref="SendGather"/> copies
/// the segments (frame heads and guest pages) through one pinned 256 KiB buffer allocated with the channel and reused
/// for every send: nothing is allocated per frame, but every sent byte is copied once more than on a plain socket
/// (which sends pages straight from guest RAM). Send is thread-safe; Receive is for one thread (SslStream allows one
/// reader and one writer at a time). The byte counters are the inner channel's: what crossed the wire, TLS records
/// included.
/// </summary>
public sealed class TlsChannel : IByteChannel
{
    /// <summary>The reused send buffer: a push batch goes out in records from it.</summary>
    public const int SendBufferSize = 256 * 1024;

    private readonly IByteChannel _inner;
    private readonly SslStream _ssl;
    private readonly Lock _send = new();
    private readonly byte[] _out = GC.AllocateUninitializedArray<byte>(SendBufferSize, pinned: true);
    private readonly byte[] _binding;
    private int _disposed;

    public string Peer => _inner.Peer;
    public long BytesSent => _inner.BytesSent;
    public long BytesReceived => _inner.BytesReceived;
    public TimeSpan? ReceiveTimeout { get => _inner.ReceiveTimeout; set => _inner.ReceiveTimeout = value; }
    public TlsChannel? Tls => this;

    /// <summary>
    /// RFC 5929's tls-server-end-point: SHA-256 of the server's certificate as this TLS session used it, the same on
    /// both ends unless someone in between terminated TLS with a certificate of its own. The key's proof covers it.
    /// </summary>
    public ReadOnlySpan<byte> Binding => _binding;
    public TlsCipherSuite CipherSuite => _ssl.NegotiatedCipherSuite;
    public SslProtocols Protocol => _ssl.SslProtocol;
    /// <summary>"TLS 1.3 TLS_AES_128_GCM_SHA256".</summary>
    public string Describe() => $"{(Protocol == SslProtocols.Tls13 ? "TLS 1.3" : Protocol.ToString())} {CipherSuite}";

    private TlsChannel(IByteChannel inner, SslStream ssl, byte[] binding)
    {
        _inner = inner;
        _ssl = ssl;
        _binding = binding;
    }

    /// <summary>
    /// The suites, fastest first on a CPU with AES instructions (the server's order decides in TLS 1.3). The cipher is
    /// AEAD in all three; the key exchange is ephemeral (forward secrecy).
    /// </summary>
    private static CipherSuitesPolicy? Suites() => OperatingSystem.IsWindows() ? null : new([TlsCipherSuite.TLS_AES_128_GCM_SHA256, TlsCipherSuite.TLS_AES_256_GCM_SHA384, TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256]);

    /// <summary>
    /// The connecting end's handshake, within <paramref name="timeout"/>. Any certificate is accepted here: it is
    /// authenticated afterwards by the pre-shared key's proof over <see cref="Binding"/> (Security/PeerAuth), which
    /// is why TLS is only offered together with a key. Disposes <paramref name="inner"/> if the handshake fails.
    /// </summary>
    public static TlsChannel Client(IByteChannel inner, TimeSpan timeout) =>
        Handshake(inner, timeout, isServer: false, ssl => ssl.AuthenticateAsClient(new SslClientAuthenticationOptions
        {
            TargetHost = "faultline-migration",
            EnabledSslProtocols = SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            CipherSuitesPolicy = Suites(),
            AllowRenegotiation = false,
            RemoteCertificateValidationCallback = (_, _, _, _) => true,   // pinned by the key's proof, not by a CA
        }), ssl => SHA256.HashData(ssl.RemoteCertificate?.GetRawCertData() ?? []));

    /// <summary>The listening end's handshake with <paramref name="certificate"/>, within <paramref name="timeout"/>. Disposes <paramref name="inner"/> if it fails.</summary>
    public static TlsChannel Server(IByteChannel inner, X509Certificate2 certificate, TimeSpan timeout) =>
        Handshake(inner, timeout, isServer: true, ssl => ssl.AuthenticateAsServer(new SslServerAuthenticationOptions
        {
            ServerCertificate = certificate,
            ClientCertificateRequired = false,
            EnabledSslProtocols = SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            CipherSuitesPolicy = Suites(),
            AllowRenegotiation = false,
        }), _ => SHA256.HashData(certificate.RawData));

    private static TlsChannel Handshake(IByteChannel inner, TimeSpan timeout, bool isServer, Action<SslStream> authenticate, Func<SslStream, byte[]> binding)
    {
        var stream = new ChannelStream(inner);
        var ssl = new SslStream(stream, leaveInnerStreamOpen: true);
        var old = inner.ReceiveTimeout;
        try
        {
            inner.ReceiveTimeout = timeout;
            authenticate(ssl);
            inner.ReceiveTimeout = old;
            return new TlsChannel(inner, ssl, binding(ssl));
        }
        catch (Exception e) when (e is AuthenticationException or IOException or MigrationException or CryptographicException or System.ComponentModel.Win32Exception)
        {
            if (isServer && stream.StartsWithFrameSync) TellPlainPeer(inner);
            ssl.Dispose();
            inner.Dispose();
            throw HandshakeFailed(inner.Peer, e, stream.StartsWithFrameSync, isServer);
        }
        catch
        {
            ssl.Dispose();
            inner.Dispose();
            throw;
        }
    }

    /// <summary>A Faultline destination without TLS reads frames: it gets one Abort saying why, in the clear (best effort).</summary>
    private static void TellPlainPeer(IByteChannel inner)
    {
        try { inner.Send(FrameCodec.ToArray(FrameType.Abort, 0, "this source requires TLS and its key (--tls, --psk-file)"u8)); }
        catch (MigrationException) { /* gone already */ }
    }

    private static MigrationException HandshakeFailed(string peer, Exception e, bool plainFaultline, bool isServer)
    {
        if (plainFaultline)
            return new MigrationException(isServer
                ? $"{peer} is a Faultline peer without TLS: this end requires TLS (--tls)"
                : $"{peer} answered without TLS: it does not run with --tls");
        var inner = Unwrap(e);
        // the transport broke under the handshake (a rejoin tries again); anything else is the peer's answer
        return inner switch
        {
            LinkLostException l => new LinkLostException($"TLS handshake with {peer} failed: {l.Message}", l),
            MigrationException m => new MigrationException($"TLS handshake with {peer} failed: {m.Message}", m),
            IOException => new LinkLostException($"TLS handshake with {peer} failed: {OneLine(inner.Message)}", e),
            _ => new MigrationException($"TLS handshake with {peer} failed: {OneLine(inner.Message)}", e),
        };
    }

    private static Exception Unwrap(Exception e)
    {
        while (e is IOException or AuthenticationException && e.InnerException is { } i) e = i;
        return e;
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();

    public void Send(ReadOnlySpan<byte> data)
    {
        lock (_send)
        {
            try
            {
                while (!data.IsEmpty)
                {
                    var n = Math.Min(data.Length, _out.Length);
                    data[..n].CopyTo(_out);
                    _ssl.Write(_out, 0, n);
                    data = data[n..];
                }
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or MigrationException or InvalidOperationException) { throw Lost(e); }
        }
    }

    /// <summary>The segments go through the reused buffer (SslStream has no gather write): copy as many as fit, send, advance.</summary>
    public void SendGather(IoVecList data)
    {
        lock (_send)
        {
            try
            {
                while (!data.IsEmpty)
                {
                    var n = data.CopyFront(_out);
                    _ssl.Write(_out, 0, n);
                    data.Advance(n);
                }
                data.Clear();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or MigrationException or InvalidOperationException) { throw Lost(e); }
        }
    }

    public int Receive(Span<byte> buffer)
    {
        try { return _ssl.Read(buffer); }
        catch (ObjectDisposedException) { return 0; }
        catch (Exception e) when (e is IOException or MigrationException or InvalidOperationException) { throw Lost(e); }
    }

    private MigrationException Lost(Exception e) => Unwrap(e) switch
    {
        MigrationException m => m,
        ObjectDisposedException => new LinkLostException($"connection to {Peer} is closed"),
        var i => new LinkLostException($"TLS connection to {Peer} lost: {OneLine(i.Message)}", e),
    };

    public void Shutdown() => _inner.Shutdown();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _inner.Shutdown();
        _ssl.Dispose();
        _inner.Dispose();
    }

    /// <summary>
    /// The inner channel as the <see cref="Stream"/> SslStream reads and writes: no buffering of its own. It remembers
    /// whether the peer's first bytes were a Faultline frame's sync word, so that a handshake with a peer that speaks
    /// the protocol without TLS says so.
    /// </summary>
    private sealed class ChannelStream(IByteChannel inner) : Stream
    {
        private int _seen;
        private ushort _first;

        public bool StartsWithFrameSync => _seen >= 2 && _first == Wire.Sync;

        public override int Read(Span<byte> buffer)
        {
            var n = inner.Receive(buffer);
            for (var i = 0; i < n && _seen < 2; i++, _seen++) _first |= (ushort)(buffer[i] << (8 * _seen));
            return n;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer) => inner.Send(buffer);
        public override void Write(byte[] buffer, int offset, int count) => inner.Send(buffer.AsSpan(offset, count));
        public override void Flush() { }
        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
