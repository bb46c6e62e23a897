using System.Diagnostics;

namespace Faultline.Cli.Tests;

/// <summary>
/// Runs the built CLI (faultline.dll beside the tests) as a child process, its stdout and stderr pipes: for commands
/// that start themselves again (migrate's source), and to see output as a script sees it.
/// </summary>
internal static class ChildCli
{
    public static CliResult Run(TimeSpan timeout, IReadOnlyDictionary<string, string>? env, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "faultline.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Wait(psi, timeout);
    }

    /// <summary>
    /// Starts the CLI and returns at once (the caller signals it, then <see cref="Finish"/>es it). SIGINT and SIGTERM
    /// are reset to their default first (coreutils' <c>env --default-signal</c>): a test run started in the background
    /// of a non-interactive shell inherits SIGINT ignored, and .NET keeps a signal ignored that was ignored at exec, as
    /// a shell's background job expects; the CLI would then never see the test's Ctrl-C.
    /// </summary>
    public static (Process Process, Task<string> Stdout, Task<string> Stderr) Start(params string[] args)
    {
        var p = Process.Start(SignallablePsi(args))!;
        return (p, p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync());
    }

    private static ProcessStartInfo SignallablePsi(string[] args)
    {
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("--default-signal=INT,TERM");
        psi.ArgumentList.Add("dotnet");
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "faultline.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>As <see cref="Start"/>, its stderr read as it comes (<see cref="StderrLog"/>), so the test can time a signal by what the CLI says.</summary>
    public static (Process Process, Task<string> Stdout, StderrLog Stderr) StartWatched(params string[] args)
    {
        var p = Process.Start(SignallablePsi(args))!;
        return (p, p.StandardOutput.ReadToEndAsync(), new StderrLog(p));
    }

    public static CliResult Finish((Process Process, Task<string> Stdout, Task<string> Stderr) run, TimeSpan timeout)
    {
        using var p = run.Process;
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"the CLI did not finish within {timeout.TotalSeconds} s");
        }
        return new CliResult(p.ExitCode, run.Stdout.Result, run.Stderr.Result);
    }

    /// <summary>The direct children of process <paramref name="pid"/> (from /proc).</summary>
    public static int[] ChildrenOf(int pid) =>
        [.. Directory.GetDirectories($"/proc/{pid}/task").SelectMany(t => File.ReadAllText(Path.Combine(t, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries)).Select(int.Parse)];

    /// <summary>
    /// Waits until process <paramref name="pid"/> has started a child (migrate's source), so a signal timed from here lands
    /// in the run whatever the host's load made of the start-up; fails the test if none comes within <paramref name="timeout"/>.
    /// </summary>
    public static int[] WaitForChildren(int pid, TimeSpan timeout)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            var children = Directory.Exists($"/proc/{pid}") ? ChildrenOf(pid) : [];
            if (children.Length > 0) return children;
            if (waited.Elapsed > timeout) Assert.Fail($"process {pid} started no child within {timeout.TotalSeconds} s");
            Thread.Sleep(10);
        }
    }

    public static void Signal(int pid, string signal)
    {
        using var k = Process.Start("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        k.WaitForExit();
    }

    /// <summary>Runs the CLI on a pseudo-terminal (util-linux <c>script</c>), as a user at a terminal would; returns what the terminal received.</summary>
    public static CliResult RunOnTerminal(TimeSpan timeout, IReadOnlyDictionary<string, string> env, params string[] args)
    {
        var command = string.Join(" ", new[] { "dotnet", Path.Combine(AppContext.BaseDirectory, "faultline.dll") }.Concat(args).Select(Quote));
        var psi = new ProcessStartInfo("script", ["-qec", command, "/dev/null"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in env) psi.Environment[k] = v;
        return Wait(psi, timeout);
    }

    private static string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    private static CliResult Wait(ProcessStartInfo psi, TimeSpan timeout)
    {
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{psi.FileName} {string.Join(' ', psi.ArgumentList)} did not finish within {timeout.TotalSeconds} s");
        }
        return new CliResult(p.ExitCode, stdout.Result, stderr.Result);
    }
}
