using System.Diagnostics;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>
/// `migrate source` keeps serving until a destination completes: a destination process killed mid-migration (before
/// or after the pause, whichever this run's timing gives) leaves the source waiting for another, and the next one gets
/// the whole guest with matching digests and no mismatches. Lost after the pause, the source first waits (--rejoin-wait)
/// for the killed destination to rejoin its session, then gives up on it.
/// </summary>
public sealed class SourceRewaitTests
{
    [KvmFact]
    public void A_source_whose_destination_is_killed_serves_the_next_one_to_completion()
    {
        using var source = SourceProcess.Start("--mem", "512M", "--workload", "random", "--wait-dest", "30", "--rejoin-wait", "2");
        var address = source.Address;

        // a 10 ms link: the whole migration takes about 3.5 s here (with 1 ms it ends about 2 s after the connection,
        // and the kill below came after the source had sent everything)
        var first = ChildCli.Start("migrate", "dest", "--connect", address, "--link-delay", "10ms");
        var port = int.Parse(address[(address.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        var connected = Stopwatch.StartNew();
        while (!Connected(port) && connected.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(20);
        Thread.Sleep(1000);   // layout, the destination's build, maybe the pause: lost either side of it, the source waits again
        first.Process.Kill();
        ChildCli.Finish(first, TimeSpan.FromSeconds(30));
        Assert.True(source.WaitForStderr("destination lost", TimeSpan.FromSeconds(60)), $"the source did not notice its destination was gone: {source.Stderr}");

        var second = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "dest", "--connect", address, "--json", "-");
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains("\"guest_mismatches\": 0", second.Stdout);
        Assert.Contains("\"digests_match\": true", second.Stdout);
        var (code, stdout) = source.Finish(TimeSpan.FromSeconds(30));
        Assert.Equal(0, code);
        Assert.Contains("waiting up to 30 s for another at " + address, source.Stderr);
        Assert.StartsWith("source: 131072 pages sent once each", stdout.Trim());
    }

    [KvmFact]
    public void A_destination_interrupted_in_postcopy_tells_the_source_which_keeps_the_guest_and_serves_the_next_at_once()
    {
        // the source keeps its default --rejoin-wait (60 s): only the destination's Abort can end the session sooner
        using var source = SourceProcess.Start("--mem", "64M", "--workload", "random", "--wait-dest", "30");
        // the link held for 3 s at 30% of the pages: the signal lands inside the post-copy, however fast the host is
        var first = ChildCli.StartWatched("migrate", "dest", "--connect", source.Address, "--inject", "delay@30%:3s");
        using var dest = first.Process;
        Assert.True(first.Stderr.WaitFor("injected delay at ", TimeSpan.FromSeconds(60)), $"the destination never reached the post-copy: {first.Stderr}");
        var sent = Stopwatch.StartNew();
        ChildCli.Signal(dest.Id, "INT");
        const string told = "destination lost: the destination ended the migration after the pause (the destination was interrupted); "
            + "the source keeps the paused guest and all 16384 pages; waiting up to 30 s for another at ";
        Assert.True(source.WaitForStderr(told, TimeSpan.FromSeconds(30)), $"the source did not hear of it: {source.Stderr}");
        var heard = sent.Elapsed;
        Assert.True(dest.WaitForExit(TimeSpan.FromSeconds(30)), "the interrupted destination did not exit");
        dest.WaitForExit();   // and its stderr is read to the end
        var exited = sent.Elapsed;
        Assert.True(dest.ExitCode == 130, $"exit {dest.ExitCode}: {first.Stderr}");
        Assert.Equal("faultline: interrupted (SIGINT)", first.Stderr.Text.Trim().Split('\n')[^1]);
        // loose bounds (a shared host); the rejoin wait it no longer sits out is 60 s
        Assert.True(heard < TimeSpan.FromSeconds(5), $"the source heard of it after {heard.TotalMilliseconds:0} ms");
        Assert.True(exited < TimeSpan.FromSeconds(5), $"the destination exited {exited.TotalMilliseconds:0} ms after the signal");

        var second = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "dest", "--connect", source.Address, "--json", "-");
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains("\"guest_mismatches\": 0", second.Stdout);
        Assert.Contains("\"digests_match\": true", second.Stdout);
        var (code, _) = source.Finish(TimeSpan.FromSeconds(30));
        Assert.Equal(0, code);
    }

    /// <summary>Whether an established TCP connection to <paramref name="port"/> exists (/proc/net/tcp: remote address, state 01).</summary>
    private static bool Connected(int port) =>
        File.ReadLines("/proc/net/tcp").Skip(1).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Any(f => f.Length > 3 && f[2].EndsWith($":{port:X4}", StringComparison.Ordinal) && f[3] == "01");
}
