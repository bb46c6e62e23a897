using System.CommandLine;
using Faultline.Cli;

namespace Faultline.Cli.Tests;

/// <summary>What one in-process CLI run printed and returned.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>Runs the CLI in-process through <see cref="App.Run(string[], TextWriter, TextWriter)"/>.</summary>
internal static class CliRunner
{
    public static CliResult Run(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = App.Run(args, stdout, stderr);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Runs with a given command set, to check how the CLI maps what a command throws.</summary>
    public static CliResult RunWith(Command[] commands, params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = App.Run(args, stdout, stderr, commands);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }
}
