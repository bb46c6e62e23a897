using System.CommandLine;
using System.Net;
using Faultline.Migration;
using Faultline.Migration.Security;
using Faultline.Migration.Transport;

namespace Faultline.Cli.Commands;

/// <summary>
/// `migrate`'s --psk-file, --tls and --insecure, and the rule they follow: peer authentication and TLS are on by
/// default whenever the address is not loopback or a unix socket (where anyone on the network could connect), off
/// on loopback (as before, so local benchmarks don't change); --insecure turns both off explicitly.
/// </summary>
internal sealed class MigrateSecurity
{
    public Option<string?> PskFile { get; } = new("--psk-file")
    {
        Description = "Pre-shared key file (at least 16 bytes, mode 0600, e.g. openssl rand -hex 32 > KEY): every connection proves it both ways. Default: required off loopback",
        HelpName = "PATH",
    };

    public Option<string?> Tls { get; } = new("--tls")
    {
        Description = "TLS 1.3 for both connections (needs the key: the key's proof authenticates the certificate): auto (on when the address is not loopback; --tls alone: on), on, off",
        HelpName = "auto|on|off", Arity = ArgumentArity.ZeroOrOne,
    };

    public Option<bool> Insecure { get; } = new("--insecure")
    {
        Description = "No peer authentication and no TLS, even off loopback: the first peer that connects gets the guest",
    };

    public IEnumerable<Option> All => [PskFile, Tls, Insecure];

    /// <summary>
    /// The security for <paramref name="address"/>. <paramref name="generate"/>: a run that starts both ends itself
    /// (plain `migrate`) makes a key for its child when one is needed and none is given.
    /// </summary>
    public PeerSecurity For(ParseResult pr, MigrationAddress address, bool generate)
    {
        var psk = pr.GetValue(PskFile);
        var tlsGiven = pr.GetResult(Tls) is { Implicit: false };
        var tlsWord = tlsGiven ? (pr.GetValue(Tls) ?? "on").Trim().ToLowerInvariant() : "auto";
        if (tlsWord is not ("auto" or "on" or "off")) throw new UsageException($"--tls {tlsWord}: use auto, on or off");
        if (pr.GetValue(Insecure))
        {
            if (psk is not null || tlsWord == "on") throw new UsageException("--insecure turns authentication and TLS off: do not give it with --psk-file or --tls");
            return PeerSecurity.None;
        }
        var local = IsLocal(address);
        var tls = tlsWord == "on" || (tlsWord == "auto" && !local);
        var key = psk is not null ? PeerKey.FromFile(psk) : null;
        if (key is null && (tls || !local))
        {
            if (!generate)
                throw new UsageException(tlsWord == "on"
                    ? "--tls needs a pre-shared key: give --psk-file KEY (the same file on both ends)"
                    : $"{address} is not loopback: give --psk-file KEY (the same on both ends; authentication and TLS are on by default off loopback), or --insecure");
            key = PeerKey.Generate();
        }
        return new PeerSecurity(key, tls);
    }

    /// <summary>Loopback or a unix socket: only this host can connect.</summary>
    public static bool IsLocal(MigrationAddress a) => a.IsUnix || a.EndPoint is IPEndPoint ip && IPAddress.IsLoopback(ip.Address);

    /// <summary>The arguments that give a child process (migrate's own source) <paramref name="s"/>, its key in <paramref name="keyFile"/> (written here, mode 0600).</summary>
    public static string[] ChildArguments(PeerSecurity s, string keyFile)
    {
        if (s.Key is null) return ["--insecure"];
        s.Key.WriteTo(keyFile);
        return ["--psk-file", keyFile, "--tls", s.Tls ? "on" : "off"];
    }
}
