using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Threads;

/// <summary>A host thread's scheduling policy: the normal time-sharing class, or SCHED_FIFO real time.</summary>
public enum SchedulingPolicy
{
    Normal = Libc.SCHED_OTHER,
    Fifo = Libc.SCHED_FIFO,
}

/// <summary>
/// The calling (or a given) host thread as the kernel sees it: its id, its scheduling, its CPU time. On Linux
/// setpriority and sched_setscheduler with a thread id apply to that one thread.
/// </summary>
public static unsafe class HostThread
{
    /// <summary>The calling thread's kernel thread id.</summary>
    public static int CurrentId => Libc.Gettid();

    /// <summary>Sets thread <paramref name="tid"/>'s nice value; false if the kernel refused (raising it needs CAP_SYS_NICE).</summary>
    public static bool TrySetNice(int tid, int nice) => tid != 0 && Libc.SetPriority(Libc.PRIO_PROCESS, tid, nice) == 0;

    /// <summary>
    /// Sets thread <paramref name="tid"/>'s policy (<paramref name="priority"/>: 1–99 for FIFO, 0 for Normal, whose
    /// nice value the kernel keeps); on refusal, false and the errno (EPERM: no CAP_SYS_NICE, RLIMIT_RTPRIO, or no
    /// real-time budget in the cgroup).
    /// </summary>
    public static bool TrySetPolicy(int tid, SchedulingPolicy policy, int priority, out int errno)
    {
        // SAFETY: struct sched_param is one int on Linux; the pointer is to a local that outlives the call.
        var p = priority;
        if (Libc.SchedSetScheduler(tid, (int)policy, &p) == 0) { errno = 0; return true; }
        errno = Marshal.GetLastPInvokeError();
        return false;
    }

    /// <summary>
    /// Sets thread <paramref name="tid"/> to SCHED_OTHER with <paramref name="nice"/> and a custom slice (sched_setattr's
    /// sched_runtime, honoured for normal tasks since Linux 6.12's EEVDF custom slices): a thread with a short slice
    /// gets an early deadline when it wakes and preempts a thread running a long one, without real time. False with the
    /// errno if refused; an older kernel accepts the call and ignores the slice.
    /// </summary>
    public static bool TrySetSlice(int tid, int nice, TimeSpan slice, out int errno)
    {
        var a = new SchedAttr
        {
            Size = SchedAttr.SizeVer1, SchedPolicy = (uint)Libc.SCHED_OTHER, SchedNice = nice,
            SchedRuntime = (ulong)(slice.TotalMilliseconds * 1_000_000),
        };
        // SAFETY: the attribute is a local that outlives the call; the kernel reads Size bytes of it.
        if (Libc.Syscall(Libc.SYS_sched_setattr, tid, (long)&a, 0) == 0) { errno = 0; return true; }
        errno = Marshal.GetLastPInvokeError();
        return false;
    }

    /// <summary>Thread <paramref name="tid"/>'s slice as the kernel holds it (sched_getattr's sched_runtime), or null if it can't be read.</summary>
    public static TimeSpan? SliceOf(int tid)
    {
        var a = default(SchedAttr);
        // SAFETY: as above; the kernel writes at most Size bytes.
        if (Libc.Syscall(Libc.SYS_sched_getattr, tid, (long)&a, SchedAttr.SizeVer1, 0) != 0) return null;
        return TimeSpan.FromTicks((long)(a.SchedRuntime / 100));
    }

    /// <summary>The calling thread's CPU time (user + system), ns: time it ran, not time it waited for a CPU.</summary>
    public static long CpuTimeNs
    {
        get
        {
            // SAFETY: struct timespec is two longs on x86-64 and arm64; the pointer is to a local that outlives the call.
            long* ts = stackalloc long[2];
            Libc.ClockGettime(Libc.CLOCK_THREAD_CPUTIME_ID, ts);
            return ts[0] * 1_000_000_000 + ts[1];
        }
    }

    /// <summary>
    /// Sleeps until <paramref name="stopwatchTimestamp"/> (a <see cref="System.Diagnostics.Stopwatch.GetTimestamp"/> value)
    /// with clock_nanosleep on CLOCK_MONOTONIC, absolute: a timed wait of tens of microseconds, which Thread.Sleep
    /// (milliseconds) cannot do. The wake-up is as late as the thread's timer slack allows (<see cref="TrySetTimerSlack"/>).
    /// Allocation-free; returns at once when the time has passed.
    /// </summary>
    public static void SleepUntil(long stopwatchTimestamp)
    {
        var left = stopwatchTimestamp - System.Diagnostics.Stopwatch.GetTimestamp();
        if (left <= 0) return;
        var ns = (long)(left * (1e9 / System.Diagnostics.Stopwatch.Frequency));
        long* ts = stackalloc long[2];
        Libc.ClockGettime(Libc.CLOCK_MONOTONIC, ts);
        var target = ts[0] * 1_000_000_000 + ts[1] + ns;
        ts[0] = target / 1_000_000_000;
        ts[1] = target % 1_000_000_000;
        while (Libc.ClockNanosleep(Libc.CLOCK_MONOTONIC, Libc.TIMER_ABSTIME, ts, null) == Errno.EINTR) { }
    }

    /// <summary>Sets the calling thread's timer slack (default 50 µs): how late a timed sleep may end.</summary>
    public static bool TrySetTimerSlack(TimeSpan slack) => Libc.SetTimerSlack((ulong)Math.Max(1, slack.Ticks * 100)) == 0;
}
