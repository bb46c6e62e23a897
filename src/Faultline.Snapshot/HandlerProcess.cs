using System.Diagnostics;
using System.Net.Sockets;

namespace Faultline.Snapshot;

/// <summary>
/// A page handler this restore started itself (<c>snapshot serve DIR --socket PATH --exit-with-stdin</c>), connected to.
/// Its stdin is a pipe from this process: if the restore dies in any way (SIGKILL included) the pipe closes and the
/// handler ends, so it never outlives the restore. Its stdout and stderr are drained here (the last stderr line says why
/// it failed, if it does). Dispose closes the connection, kills and reaps the process and removes its socket file.
/// </summary>
internal sealed class HandlerProcess : IDisposable
{
    private readonly Process _process;
    private string? _lastError;

    public string SocketPath { get; }
    public Socket Connection { get; private set; } = null!;
    public int Pid => _process.Id;

    private HandlerProcess(Process process, string socketPath) { _process = process; SocketPath = socketPath; }

    /// <summary>Starts the handler and waits until it accepts a connection; a handler that exits or does not listen in time: one-line exception.</summary>
    public static HandlerProcess Start(HandlerRestart how, string directory, string socketPath)
    {
        var psi = new ProcessStartInfo(how.Program)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in how.Prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "snapshot", "serve", Path.GetFullPath(directory), "--socket", socketPath, "--exit-with-stdin" }) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi) ?? throw new FaultlineException($"cannot start {how.Program}"); }
        catch (System.ComponentModel.Win32Exception e) { throw new FaultlineException($"cannot start {how.Program}: {e.Message}"); }
        var h = new HandlerProcess(p, socketPath);
        try
        {
            p.ErrorDataReceived += (_, e) => { if (!string.IsNullOrWhiteSpace(e.Data)) h._lastError = e.Data.Trim(); };
            p.OutputDataReceived += (_, _) => { };
            p.BeginErrorReadLine();
            p.BeginOutputReadLine();
            h.Connection = h.WaitListening(how.StartTimeout);
            return h;
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    private Socket WaitListening(TimeSpan timeout)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                _process.WaitForExit();   // the last stderr lines are read
                throw new FaultlineException($"it {DescribeExit(_process.ExitCode)} before it listened{(_lastError is { } l ? $": {l}" : "")}");
            }
            if (File.Exists(SocketPath))
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    s.Connect(new UnixDomainSocketEndPoint(SocketPath));
                    return s;
                }
                catch (SocketException) { s.Dispose(); }   // bound, not yet listening
            }
            if (waited.Elapsed > timeout) throw new FaultlineException($"it did not listen on {SocketPath} within {timeout.TotalSeconds:0} s");
            Thread.Sleep(5);
        }
    }

    /// <summary>"exited with status 3", "was killed by signal 9" (.NET reports a signal as 128 + its number).</summary>
    private static string DescribeExit(int code) => code is > 128 and < 160 ? $"was killed by signal {code - 128}" : $"exited with status {code}";

    public void Dispose()
    {
        Connection?.Dispose();
        try
        {
            if (!_process.HasExited) _process.Kill();
            _process.WaitForExit();
        }
        catch (InvalidOperationException) { }   // it was never started
        _process.Dispose();
        try { File.Delete(SocketPath); } catch (IOException) { }
    }
}
