using System.Diagnostics;

namespace Faultline.Cli.Tests;

/// <summary>
/// A <c>migrate source --listen 127.0.0.1:0</c> child process (the built CLI beside the tests): started and read until
/// it listens, its stderr gathered as it comes, so a test can wait for what the source says while destinations come
/// and go. Disposing kills it if it is still running.
/// </summary>
internal sealed class SourceProcess : IDisposable
{
    private const string Listening = "listening on ";
    private readonly Process _process;
    private readonly StderrLog _stderr;

    /// <summary>Where the source listens (HOST:PORT).</summary>
    public string Address { get; }

    private SourceProcess(Process process)
    {
        _process = process;
        _stderr = new StderrLog(process);
        var line = _process.StandardOutput.ReadLine() ?? throw new Xunit.Sdk.XunitException($"the source said nothing: {Stderr}");
        Assert.StartsWith(Listening, line);
        Address = line[Listening.Length..];
    }

    /// <summary>Starts <c>migrate source --listen 127.0.0.1:0 ARGS</c> and returns once it listens.</summary>
    public static SourceProcess Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "faultline.dll"), "migrate", "source", "--listen", "127.0.0.1:0" }.Concat(args))
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        try { return new SourceProcess(p); }
        catch
        {
            p.Kill();
            p.Dispose();
            throw;
        }
    }

    /// <summary>Everything the source wrote to stderr so far.</summary>
    public string Stderr => _stderr.Text;

    /// <summary>Waits up to <paramref name="timeout"/> for <paramref name="text"/> to appear on the source's stderr.</summary>
    public bool WaitForStderr(string text, TimeSpan timeout) => _stderr.WaitFor(text, timeout);

    /// <summary>Waits for the source to end by itself (a destination completed); its exit code and the rest of its stdout.</summary>
    public (int ExitCode, string Stdout) Finish(TimeSpan timeout)
    {
        Assert.True(_process.WaitForExit(timeout), $"the source did not end within {timeout.TotalSeconds} s: {Stderr}");
        _process.WaitForExit();   // and its stderr is read to the end
        return (_process.ExitCode, _process.StandardOutput.ReadToEnd());
    }

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill();
        _process.Dispose();
    }
}
