using System.Diagnostics;

namespace Faultline.Cli.Tests;

/// <summary>
/// The built CLI as a child process whose stderr is read line by line as it comes (<see cref="ChildCli"/> reads it at
/// the end), so a test can act on what the process has just said: a handler's "serving pid N", a restore's restart
/// line. SIGINT and SIGTERM reset to their default, as in <see cref="ChildCli.Start"/>.
/// </summary>
internal sealed class LineProcess : IDisposable
{
    private readonly Process _p;
    private readonly List<string> _err = [];
    private readonly System.Text.StringBuilder _out = new();

    public int Pid => _p.Id;

    private LineProcess(Process p) => _p = p;

    public static LineProcess Start(params string[] args)
    {
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--default-signal=INT,TERM", "dotnet", Path.Combine(AppContext.BaseDirectory, "faultline.dll") }.Concat(args)) psi.ArgumentList.Add(a);
        var lp = new LineProcess(Process.Start(psi)!);
        // a thread of its own for each pipe, not the pool's async reads: with the pool's threads busy (two cores, several
        // children) a line was seen up to 0.6 s late, and a signal timed from it missed the run it aimed at
        lp._readers = [Reader(lp._p.StandardError, line => { lock (lp._err) { lp._err.Add(line); Monitor.PulseAll(lp._err); } }, "err"),
                       Reader(lp._p.StandardOutput, line => { lock (lp._out) lp._out.AppendLine(line); }, "out")];
        return lp;
    }

    private Thread[] _readers = [];

    private static Thread Reader(StreamReader from, Action<string> line, string name)
    {
        var t = new Thread(() => { while (from.ReadLine() is { } l) line(l); }) { IsBackground = true, Name = $"test-{name}" };
        t.Start();
        return t;
    }

    public string[] ErrLines() { lock (_err) return [.. _err]; }

    /// <summary>Waits for a stderr line that <paramref name="match"/> accepts and returns it; fails the test if none comes in time or the process ends first.</summary>
    public string WaitForLine(Func<string, bool> match, TimeSpan timeout)
    {
        var waited = Stopwatch.StartNew();
        lock (_err)
        {
            while (true)
            {
                var hit = _err.FirstOrDefault(match);
                if (hit is not null) return hit;
                if (_p.HasExited && _p.WaitForExit(1000) && _err.FirstOrDefault(match) is null)
                    Assert.Fail($"process {Pid} exited ({_p.ExitCode}) before the awaited line:\n{string.Join('\n', _err)}");
                if (waited.Elapsed > timeout) Assert.Fail($"no such line from process {Pid} within {timeout.TotalSeconds} s:\n{string.Join('\n', _err)}");
                Monitor.Wait(_err, 50);
            }
        }
    }

    public void Signal(string signal) => ChildCli.Signal(Pid, signal);

    /// <summary>SIGKILL, sent at once (no kill(1) to start first).</summary>
    public void Kill() => _p.Kill();

    /// <summary>Waits for the process to end; its exit code, all its stdout and stderr.</summary>
    public CliResult Finish(TimeSpan timeout)
    {
        if (!_p.WaitForExit(timeout))
        {
            _p.Kill(entireProcessTree: true);
            Assert.Fail($"process {Pid} did not finish within {timeout.TotalSeconds} s:\n{string.Join('\n', ErrLines())}");
        }
        foreach (var t in _readers) t.Join();   // the output is all read
        lock (_out) return new CliResult(_p.ExitCode, _out.ToString(), string.Join('\n', ErrLines()));
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) _p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _p.Dispose();
    }
}
