using System.Diagnostics;
using System.Text;

namespace Faultline.Cli.Tests;

/// <summary>A child process's stderr gathered line by line as it comes, so a test can wait for what the child says while it runs.</summary>
internal sealed class StderrLog
{
    private readonly StringBuilder _text = new();

    /// <summary>Starts reading <paramref name="process"/>'s redirected stderr.</summary>
    public StderrLog(Process process)
    {
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_text) _text.AppendLine(e.Data);
        };
        process.BeginErrorReadLine();
    }

    /// <summary>Everything written so far.</summary>
    public string Text
    {
        get { lock (_text) return _text.ToString(); }
    }

    /// <summary>Waits up to <paramref name="timeout"/> for <paramref name="text"/> to appear.</summary>
    public bool WaitFor(string text, TimeSpan timeout)
    {
        var waited = Stopwatch.StartNew();
        while (!Text.Contains(text, StringComparison.Ordinal))
        {
            if (waited.Elapsed > timeout) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    public override string ToString() => Text;
}
