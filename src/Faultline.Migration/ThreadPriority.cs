using System.Runtime.InteropServices;

namespace Faultline.Migration;

/// <summary>
/// Per-thread nice values (setpriority(PRIO_PROCESS, tid) applies to one thread on Linux). Post-copy on a small
/// host has more busy threads than cores; who runs first is set here:
/// <list type="bullet">
/// <item><see cref="LatencyNice"/> (−15): the demand path (demand server, urgent receiver, the urgent channel's emulated-delay pump, a
/// vCPU from its fault exit until the page is installed, a uffd reader waiting for a page) and the downtime's threads.</item>
/// <item><see cref="BulkNice"/> (−5): the background push and the destination's main receiver, so that every page lands as fast as the link and the CPUs allow.</item>
/// <item><see cref="GuestPostcopyNice"/> (+10): destination vCPU threads that handle their own faults (exits, bitmap engines) while
/// pages are still arriving (back to 0 once every page is present; a vCPU waiting for a page is at −15 meanwhile).
/// A vCPU that runs ahead of the push only faults at its front, where most pages it asks for are already in flight
/// (each one resent and dropped as a duplicate), and competes for the cores the transfer needs. Measured, 1 GiB at
/// 2 vCPUs on 2 cores (medians of 4): post-copy 1.3–1.6 s with every thread at 0, 1.11 s with vCPUs at +2, 0.98 s
/// at +5, 0.82 s at +10; the guest itself also finishes its verification sooner (1.13, 1.00, 0.90 s after the
/// pause): fewer front faults, fewer resends.</item>
/// </list>
/// Raising priority needs CAP_SYS_NICE (root); without it the threads stay at nice 0, which only costs time.
/// </summary>
internal static partial class ThreadPriority
{
    private const int PRIO_PROCESS = 0;

    public const int LatencyNice = -15;
    public const int BulkNice = -5;
    public const int GuestPostcopyNice = 10;

    [ThreadStatic] private static int t_base;
    [ThreadStatic] private static bool t_raised;

    /// <summary>Sets the nice value of thread <paramref name="tid"/>; false if the kernel refused (raising priority needs CAP_SYS_NICE).</summary>
    public static bool TrySetNice(int tid, int nice) => tid != 0 && SetPriority(PRIO_PROCESS, tid, nice) == 0;

    /// <summary>The calling thread's kernel thread id.</summary>
    public static int CurrentThreadId => Gettid();

    /// <summary>Whether the calling thread is at <see cref="LatencyNice"/> (since <see cref="RaiseForLatency"/>).</summary>
    public static bool IsRaised => t_raised;

    /// <summary>The nice value <see cref="LowerToNormal"/> returns the calling thread to.</summary>
    public static int Base => t_base;

    /// <summary>
    /// Puts the calling thread ahead of the push, the receivers and the guest: a demand request must not wait for a
    /// CPU slice behind them.
    /// </summary>
    public static bool RaiseForLatency() => t_raised = TrySetNice(Gettid(), LatencyNice);

    /// <summary>Back to this thread's base nice value (0 unless <see cref="SetBase"/> said otherwise).</summary>
    public static void LowerToNormal()
    {
        TrySetNice(Gettid(), t_base);
        t_raised = false;
    }

    /// <summary>Sets the calling thread's nice value and makes it the one <see cref="LowerToNormal"/> returns to.</summary>
    public static bool SetBase(int nice)
    {
        t_base = nice;
        t_raised = false;
        return TrySetNice(Gettid(), nice);
    }

    [LibraryImport("libc", EntryPoint = "gettid")]
    private static partial int Gettid();

    [LibraryImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static partial int SetPriority(int which, int who, int prio);
}
