using System.Diagnostics;

namespace Faultline.Migration.Transport;

/// <summary>
/// A real link for the two ends: a network namespace for the source, joined to this (the destination's) namespace
/// by a veth pair, set up with iproute2's <c>ip</c> and always torn down (deleting the namespace deletes both veth
/// ends). The source runs inside with <c>ip netns exec</c>; about 13 µs round trip here (HOST.md). Needs root.
/// </summary>
public sealed class NetnsLink : IDisposable
{
    private int _disposed;

    public string SourceNamespace { get; }
    public string HostInterface { get; }
    public string SourceIp { get; }
    public string DestinationIp { get; }

    private NetnsLink(string ns, string hostIf, string srcIp, string dstIp)
    {
        SourceNamespace = ns; HostInterface = hostIf; SourceIp = srcIp; DestinationIp = dstIp;
    }

    public static NetnsLink Create()
    {
        var id = Environment.ProcessId % 60000;
        var ns = $"fl-mig-{id}";
        var hostIf = $"flm{id}h";
        var peerIf = $"flm{id}s";
        var net = $"10.{200 + id / 250 % 50}.{id % 250}";
        var link = new NetnsLink(ns, hostIf, $"{net}.2", $"{net}.1");
        try
        {
            Ip("netns", "add", ns);
            Ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf);
            Ip("link", "set", peerIf, "netns", ns);
            Ip("addr", "add", $"{link.DestinationIp}/30", "dev", hostIf);
            Ip("link", "set", hostIf, "up");
            Ip("-n", ns, "addr", "add", $"{link.SourceIp}/30", "dev", peerIf);
            Ip("-n", ns, "link", "set", peerIf, "up");
            Ip("-n", ns, "link", "set", "lo", "up");
            return link;
        }
        catch
        {
            link.Dispose();
            throw;
        }
    }

    private static void Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception) { throw new HostSupportException("--netns needs iproute2's ip command"); }
        using (p)
        {
            var err = p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new HostSupportException($"ip {string.Join(' ', args)} failed: {err.Trim().ReplaceLineEndings(" ")}");
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { Ip("netns", "del", SourceNamespace); } catch (HostSupportException) { }
        try { Ip("link", "del", HostInterface); } catch (HostSupportException) { } // already gone with the namespace, normally
    }
}
