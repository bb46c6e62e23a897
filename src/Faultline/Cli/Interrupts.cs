using System.Runtime.InteropServices;

namespace Faultline.Cli;

/// <summary>
/// Ctrl-C and SIGTERM for the whole process (signals are process-wide, so this is the CLI's one piece of static
/// state): the first one cancels <see cref="Token"/>, which every command passes down; work that does not end within
/// <see cref="Grace"/> (a VM being built, guest memory being touched) is cut short: the registered clean-ups run (a
/// source child is killed, a network namespace removed) and the process exits 130 (SIGINT) or 143 (SIGTERM). What
/// the kernel owns (VMs, fds, userfaultfds, mappings, threads) goes with the process.
/// </summary>
internal static class Interrupts
{
    public static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(400);
    private static readonly CancellationTokenSource Cts = new();
    private static readonly List<Action> Cleanups = [];
    private static PosixSignalRegistration? _int, _term;
    private static int _signal, _reported;

    public static CancellationToken Token => Cts.Token;
    /// <summary>The signal that arrived (SIGINT 2, SIGTERM 15), 0 if none.</summary>
    public static int Signal => Volatile.Read(ref _signal);
    public static int ExitCode => 128 + Signal;
    public static string SignalName => Signal == 15 ? "SIGTERM" : "SIGINT";

    /// <summary>Writes the one line an interrupted command ends with, once, whichever of the command and the cut comes first.</summary>
    public static void Report(TextWriter stderr)
    {
        if (Interlocked.Exchange(ref _reported, 1) != 0) return;
        stderr.WriteLine($"{ErrorReport.Prefix}interrupted ({SignalName})");
        stderr.Flush();
    }

    /// <summary>Installs the handlers (once, for the real process; in-process test runs leave the host's signals alone).</summary>
    public static void Install()
    {
        if (_int is not null) return;
        // the runtime runs signal handlers on the thread pool: with its two threads busy (a VM being prepared, JIT) a
        // handler waited up to 1.5 s for a third one (the pool adds one about every 0.5 s)
        ThreadPool.GetMinThreads(out var workers, out var io);
        ThreadPool.SetMinThreads(Math.Max(workers, 8), io);
        _int = PosixSignalRegistration.Create(PosixSignal.SIGINT, On);
        _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, On);
    }

    /// <summary>Runs <paramref name="cleanup"/> if the process is cut short; dispose the result once the resource is gone.</summary>
    public static IDisposable OnCutShort(Action cleanup)
    {
        lock (Cleanups) Cleanups.Add(cleanup);
        return new Registration(cleanup);
    }

    private static void On(PosixSignalContext c)
    {
        c.Cancel = true;   // not the runtime's default termination: the command unwinds first
        if (Interlocked.CompareExchange(ref _signal, c.Signal == PosixSignal.SIGTERM ? 15 : 2, 0) != 0) return;
        new Thread(() =>
        {
            Thread.Sleep(Grace);
            Action[] all;
            lock (Cleanups) all = [.. Cleanups];
            foreach (var a in all) try { a(); } catch (Exception) { /* cutting short: the others still run */ }
            Report(Console.Error);
            Environment.Exit(ExitCode);
        }) { IsBackground = true, Name = "fl-interrupt" }.Start();
        Cts.Cancel();
    }

    private sealed class Registration(Action cleanup) : IDisposable
    {
        public void Dispose() { lock (Cleanups) Cleanups.Remove(cleanup); }
    }
}
