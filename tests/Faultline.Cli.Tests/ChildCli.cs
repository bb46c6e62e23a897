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
