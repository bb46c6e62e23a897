using System.Diagnostics;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>
/// Ctrl-C, SIGTERM and a source that dies, on a real `migrate --mem 1G --workload random --link-delay 1ms` (its
/// preparation populates a GiB and takes about a second, its post-copy 2–10 s here; each signal is timed from the moment
/// the source child exists, so it lands inside the run however slowly a loaded host started the CLI): the command
/// stops with 130 / 143 and one line, takes its source child with it, and a dead source is named as such.
/// The bound asserted is loose (the host is shared); docs/failures.md gives the measured times.
/// </summary>
public sealed class InterruptTests
{
    private static readonly string[] Migrate = ["migrate", "--mem", "1G", "--workload", "random", "--link-delay", "1ms"];

    [KvmTheory]
    [InlineData("INT", 130, 0)]        // while the destination prepares and the source starts
    [InlineData("INT", 130, 1000)]     // connecting, handing over or early in post-copy
    [InlineData("TERM", 143, 300)]
    public void An_interrupt_stops_migrate_with_its_exit_code_and_leaves_no_source_behind(string signal, int code, int afterMs)
    {
        var run = ChildCli.Start(Migrate);
        ChildCli.WaitForChildren(run.Process.Id, TimeSpan.FromSeconds(20));
        Thread.Sleep(afterMs);
        var children = ChildCli.ChildrenOf(run.Process.Id);
        var sent = Stopwatch.StartNew();
        ChildCli.Signal(run.Process.Id, signal);
        var r = ChildCli.Finish(run, TimeSpan.FromSeconds(30));
        var took = sent.Elapsed;
        Assert.True(code == r.ExitCode, r.ToString());
        Assert.Equal($"faultline: interrupted (SIG{signal})", r.StderrLines[^1]);
        Assert.True(took < TimeSpan.FromSeconds(5), $"took {took.TotalMilliseconds:0} ms to stop");
        Thread.Sleep(200);
        Assert.All(children, c => Assert.False(Directory.Exists($"/proc/{c}") && !File.ReadAllText($"/proc/{c}/stat").Contains(") Z "), $"child {c} still runs"));
    }

    [KvmTheory]
    [InlineData(0)]
    [InlineData(1000)]
    public void A_source_that_dies_is_named_with_its_signal(int afterMs)
    {
        var run = ChildCli.Start(Migrate);
        ChildCli.WaitForChildren(run.Process.Id, TimeSpan.FromSeconds(20));
        Thread.Sleep(afterMs);
        var children = ChildCli.ChildrenOf(run.Process.Id);
        foreach (var c in children) ChildCli.Signal(c, "KILL");
        var r = ChildCli.Finish(run, TimeSpan.FromSeconds(30));
        Assert.True(r.ExitCode == 5, r.ToString());
        Assert.StartsWith("faultline: the source process was killed by signal 9 (SIGKILL)", r.StderrLines[^1]);
    }
}
