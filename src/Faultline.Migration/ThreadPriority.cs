using System.Runtime.InteropServices;

namespace Faultline.Migration;

/// <summary>Per-thread nice values (setpriority(PRIO_PROCESS, tid) applies to one thread on Linux).</summary>
internal static partial class ThreadPriority
{
    private const int PRIO_PROCESS = 0;

    /// <summary>Sets the nice value of thread <paramref name="tid"/>; false if the kernel refused (raising priority needs CAP_SYS_NICE).</summary>
    public static bool TrySetNice(int tid, int nice) => tid != 0 && SetPriority(PRIO_PROCESS, tid, nice) == 0;

    /// <summary>Nice value of the threads on the demand path (source demand server, destination urgent receiver).</summary>
    public const int LatencyNice = -15;

    /// <summary>
    /// Puts the calling thread ahead of the push, the receivers and the guest: a demand request must not wait for a
    /// CPU slice behind them (2 cores here, 4+ busy threads during post-copy). Needs CAP_SYS_NICE; without it the
    /// thread stays at nice 0, which only costs latency.
    /// </summary>
    public static bool RaiseForLatency() => TrySetNice(Gettid(), LatencyNice);

    /// <summary>Back to nice 0 (from a raised priority: allowed for root, CAP_SYS_NICE).</summary>
    public static void LowerToNormal() => TrySetNice(Gettid(), 0);

    [LibraryImport("libc", EntryPoint = "gettid")]
    private static partial int Gettid();

    [LibraryImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static partial int SetPriority(int which, int who, int prio);
}
