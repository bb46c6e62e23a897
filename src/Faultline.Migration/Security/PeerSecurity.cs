using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Security;

/// <summary>
/// Who may connect, and whether the bytes are encrypted: a pre-shared <see cref="Key"/> (every connection proves it
/// both ways right after the Hellos, <see cref="PeerAuth"/>) and optionally TLS 1.3 under the protocol
/// (<see cref="TlsChannel"/>). TLS is only offered with a key: the listening end presents a self-signed certificate
/// made for this process (ECDSA P-256, or <see cref="Certificate"/> if one is given), and the connecting end accepts
/// it because the key's proof covers the certificate's hash (the TLS binding), not because a CA signed it.
/// <see cref="None"/>: neither, as on loopback by default.
/// </summary>
public sealed class PeerSecurity
{
    private readonly Lazy<X509Certificate2> _certificate;

    /// <summary>No key, no TLS: the first peer that speaks the protocol is served.</summary>
    public static PeerSecurity None { get; } = new(null, tls: false);

    public PeerKey? Key { get; }
    public bool Tls { get; }

    /// <param name="certificate">The listening end's TLS certificate with its private key (null: a self-signed one made once, on first use).</param>
    public PeerSecurity(PeerKey? key, bool tls, X509Certificate2? certificate = null)
    {
        if (tls && key is null) throw new UsageException("TLS needs a pre-shared key (--psk-file): the key's proof is what authenticates the certificate");
        Key = key;
        Tls = tls;
        _certificate = new Lazy<X509Certificate2>(() => certificate ?? SelfSigned(), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>What the listening end presents under TLS.</summary>
    public X509Certificate2 Certificate => _certificate.Value;

    /// <summary>What this end's Hello announces.</summary>
    public HelloFlags Flags => Key is null ? HelloFlags.None : HelloFlags.Authenticates;

    /// <summary>"none", "psk (HMAC-SHA256)", "TLS 1.3 TLS_AES_128_GCM_SHA256 + psk (HMAC-SHA256)": for the report.</summary>
    public string Describe(PeerConnection? c) => (Key, c?.Tls) switch
    {
        (null, _) => "none",
        (_, { } tls) => $"{tls.Describe()} + psk (HMAC-SHA256)",
        _ => "psk (HMAC-SHA256)",
    };

    /// <summary>A connection the listening end accepted: TLS's server handshake (within <paramref name="timeout"/>) when TLS is on.</summary>
    public IByteChannel Accepted(IByteChannel raw, TimeSpan timeout) => Tls ? TlsChannel.Server(raw, Certificate, timeout) : raw;

    /// <summary>A connection this end opened: TLS's client handshake (within <paramref name="timeout"/>) when TLS is on.</summary>
    public IByteChannel Connected(IByteChannel raw, TimeSpan timeout) => Tls ? TlsChannel.Client(raw, timeout) : raw;

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=faultline-migration", key, HashAlgorithmName.SHA256);
        var now = DateTimeOffset.UtcNow;
        using var cert = req.CreateSelfSigned(now.AddDays(-1), now.AddYears(1));
        // through PKCS#12 once, so the private key is one the platform's TLS can use (not an ephemeral handle)
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
    }
}
