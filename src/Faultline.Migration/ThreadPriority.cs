using Faultline.Kvm.Threads;
using Faultline.Kvm.Interop;
using Faultline.Paging.Engines;

namespace Faultline.Migration;

/// <summary>
/// Per-thread scheduling (setpriority and sched_setscheduler with a thread id apply to one thread on Linux).
/// Post-copy on a small host has more busy threads than cores; who runs first is set here:
/// <list type="bullet">
/// <item>The demand path. With <see cref="DemandPathPolicy.RealTime"/> (the default where the kernel allows it) it runs
/// under SCHED_FIFO: the threads that carry demands and their pages for the whole migration (<see cref="JoinDemandPath"/>:
/// the source's demand server, the destination's urgent receiver, the urgent channel's emulated-delay pumps) at
/// <see cref="CarrierRtPriority"/>, and a fault path (<see cref="RaiseForLatency"/>: a vCPU from its fault exit until
/// the page is installed, a uffd reader from its demand until the page's bytes are in hand) at
/// <see cref="WaiterRtPriority"/>, so that a carrier that wakes preempts a waiter still spinning for the page it brings.
/// The downtime's threads stay at nice <see cref="LatencyNice"/> under either policy (<see cref="RaiseForDowntime"/>).
/// Only threads that block are raised this way: a SCHED_FIFO thread that spins or yields keeps every normal thread off its
/// CPU (sched_yield only lets threads of its own priority run), so a fault path spins at most 100 µs before it blocks (about
/// the link's round trip, <see cref="Destination.RemotePageSource.SpinForRoundTrip"/>), a
/// wait for a page another thread is installing leaves real time before it yields (<see cref="PageTracker.BeforeYielding"/>),
/// and a vCPU goes back to SCHED_OTHER before it re-enters KVM_RUN. Where SCHED_FIFO is refused (EPERM: no
/// CAP_SYS_NICE, RLIMIT_RTPRIO 0, no real-time budget in this cgroup) or turned off (FAULTLINE_RT=0), the same
/// threads run at nice <see cref="LatencyNice"/> (−15) instead (<see cref="DemandPathPolicy.Nice"/>).</item>
/// <item><see cref="BulkNice"/> (−5): the background push and the destination's main receiver, so that every page lands as fast as the link and the CPUs allow.</item>
/// <item><see cref="GuestPostcopyNice"/> (+19): destination vCPU threads that handle their own faults (exits, bitmap engines) while
/// pages are still arriving (back to 0 once every page is present; a vCPU waiting for a page is on the demand path meanwhile).
/// A vCPU that runs ahead of the push only faults at its front, where most pages it asks for are already in flight
/// (each one resent and dropped as a duplicate), and competes for the cores the transfer needs. Measured, 1 GiB at
/// 2 vCPUs on 2 cores (medians of 4, an earlier build): post-copy 1.3–1.6 s with every thread at 0, 1.11 s with vCPUs
/// at +2, 0.98 s at +5, 0.82 s at +10; with the current build (prepared shmem destination, blocking sockets, SCHED_FIFO
/// demand path) 515, 460, 516, 628 ms at +10 against 526, 598, 495, 436 ms at +19 (total over the raw socket
/// medians 1.59 and 1.51), and in 3 earlier interleaved rounds 1143, 722, 1436 ms at +10 against 673, 690, 615 ms at
/// +19: a guest that runs slower behind the push faults less.</item>
/// </list>
/// Raising priority needs CAP_SYS_NICE (root); without it the threads stay at nice 0, which only costs time.
/// </summary>
internal static class ThreadPriority
{

    public const int LatencyNice = -15;
    public const int BulkNice = -5;
    public const int GuestPostcopyNice = 19;
    /// <summary>SCHED_FIFO priority of a fault path waiting for its page: the lowest real-time priority, above every normal thread.</summary>
    public const int WaiterRtPriority = 1;
    /// <summary>SCHED_FIFO priority of the threads carrying demands and pages: above a waiter, far below the kernel's own real-time threads (≥ 50).</summary>
    public const int CarrierRtPriority = 2;

    [ThreadStatic] private static int t_base;
    [ThreadStatic] private static bool t_raised;
    [ThreadStatic] private static bool t_fifo;

    private static readonly Lock s_gate = new();
    private static DemandPathPolicy? s_policy;
    private static string s_detail = "";
    private static long s_leftForYield;
    private static readonly List<int> s_carriers = [];
    private static bool s_carriersHeld;

    static ThreadPriority()
    {
        // a SCHED_FIFO thread about to yield in a wait for another thread's install must leave real time first
        PageTracker.BeforeYielding = LeaveRealTime;
    }

    /// <summary>How the demand path is raised in this process (probed once, on first use).</summary>
    public static DemandPathPolicy Policy
    {
        get
        {
            if (s_policy is { } p) return p;
            lock (s_gate)
            {
                if (s_policy is null) Choose(Environment.GetEnvironmentVariable("FAULTLINE_RT"));
                return s_policy!.Value;
            }
        }
    }

    /// <summary>What <see cref="Policy"/> means here, or why real time is not used (for the report).</summary>
    public static string PolicyDetail { get { _ = Policy; return s_detail; } }

    /// <summary>Times a SCHED_FIFO thread left real time to yield in a wait for a page another thread was installing.</summary>
    public static long LeftRealTimeToYield => Interlocked.Read(ref s_leftForYield);

    /// <summary>
    /// Picks the policy: <paramref name="setting"/> is FAULTLINE_RT's value ("0" turns real time off); otherwise
    /// real time if the kernel lets this thread switch to SCHED_FIFO and back.
    /// </summary>
    internal static void Choose(string? setting)
    {
        lock (s_gate)
        {
            if (setting?.Trim() == "0")
            {
                UseNice("SCHED_FIFO turned off (FAULTLINE_RT=0)");
                return;
            }
            var tid = HostThread.CurrentId;
            if (HostThread.TrySetPolicy(tid, SchedulingPolicy.Fifo, WaiterRtPriority, out var errno))
            {
                HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
                s_policy = DemandPathPolicy.RealTime;
                s_detail = $"SCHED_FIFO {CarrierRtPriority} (demand server, urgent receiver, urgent delay pump), {WaiterRtPriority} (a fault path until its page is in)";
                return;
            }
            UseNice($"SCHED_FIFO refused: {Errno.Name(errno)}");
        }
    }

    private static void UseNice(string why)
    {
        s_policy = DemandPathPolicy.Nice;
        s_detail = $"nice {LatencyNice}: {why}";
    }

    /// <summary>Whether the calling thread is on the demand path (since <see cref="RaiseForLatency"/> or <see cref="JoinDemandPath"/>).</summary>
    public static bool IsRaised => t_raised;

    /// <summary>Whether the calling thread runs under SCHED_FIFO now.</summary>
    public static bool IsRealTime => t_fifo;

    /// <summary>The nice value <see cref="LowerToNormal"/> returns the calling thread to.</summary>
    public static int Base => t_base;

    /// <summary>
    /// Puts the calling thread ahead of the push, the receivers and the guest until <see cref="LowerToNormal"/> or
    /// <see cref="SetBase"/>: a demand request must not wait for a CPU slice behind them. One syscall.
    /// </summary>
    public static bool RaiseForLatency() => Raise(WaiterRtPriority);

    /// <summary>
    /// For a thread that carries demands or pages (and only blocks in between) until <see cref="LeaveDemandPath"/>: on
    /// the demand path, ahead of a fault path that waits for what it carries; at nice <see cref="LatencyNice"/> while
    /// the carriers are held (<see cref="HoldCarriers"/>).
    /// </summary>
    public static bool JoinDemandPath()
    {
        var tid = HostThread.CurrentId;
        lock (s_gate)
        {
            s_carriers.Add(tid);
            if (s_carriersHeld) return t_raised = HostThread.TrySetNice(tid, LatencyNice);
        }
        return Raise(CarrierRtPriority);
    }

    /// <summary>A carrier thread is done: it leaves the demand path (and the set <see cref="HoldCarriers"/> acts on).</summary>
    public static void LeaveDemandPath()
    {
        var tid = HostThread.CurrentId;
        lock (s_gate) s_carriers.Remove(tid);
        // held or released by another thread meanwhile: this thread's flags may be stale, so both calls
        HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
        HostThread.TrySetNice(tid, t_base);
        t_fifo = t_raised = false;
    }

    /// <summary>
    /// The downtime starts: no thread of this process runs under SCHED_FIFO until <see cref="ReleaseCarriers"/>. A vCPU
    /// that resumed first and faults would otherwise have the carriers (and the delay pumps, which spin through each
    /// frame's delay) take the CPU from the vCPUs still restoring their state: measured with 30 µs emulated, downtime
    /// median 10.4–11.5 ms against 5.0–6.7 without real time. The carriers wait at nice <see cref="LatencyNice"/> meanwhile.
    /// </summary>
    public static void HoldCarriers()
    {
        lock (s_gate)
        {
            s_carriersHeld = true;
            foreach (var tid in s_carriers)
            {
                HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
                HostThread.TrySetNice(tid, LatencyNice);
            }
        }
    }

    /// <summary>The downtime is over (every vCPU runs): carriers back under SCHED_FIFO (if that is the policy). Idempotent.</summary>
    public static void ReleaseCarriers()
    {
        lock (s_gate)
        {
            if (!s_carriersHeld) return;
            s_carriersHeld = false;
            if (s_policy != DemandPathPolicy.RealTime) return;
            foreach (var tid in s_carriers) HostThread.TrySetPolicy(tid, SchedulingPolicy.Fifo, CarrierRtPriority, out _);
        }
    }

    /// <summary>
    /// For the downtime's threads (the source's pause, the destination's state receiver and vCPU restores): nice
    /// <see cref="LatencyNice"/> under either policy, as before SCHED_FIFO was used for the demand path.
    /// </summary>
    public static bool RaiseForDowntime() => t_raised = HostThread.TrySetNice(HostThread.CurrentId, LatencyNice);

    private static bool Raise(int rtPriority)
    {
        var tid = HostThread.CurrentId;
        if (Policy == DemandPathPolicy.RealTime)
        {
            if (HostThread.TrySetPolicy(tid, SchedulingPolicy.Fifo, rtPriority, out var errno)) return t_fifo = t_raised = true;
            // refused although the probe was allowed (e.g. a thread of another cgroup): nice from now on, for every thread
            lock (s_gate) if (s_policy == DemandPathPolicy.RealTime) UseNice($"SCHED_FIFO refused at run time: {Errno.Name(errno)}");
        }
        return t_raised = HostThread.TrySetNice(tid, LatencyNice);
    }

    /// <summary>Back to this thread's base nice value (0 unless <see cref="SetBase"/> said otherwise). One syscall.</summary>
    public static void LowerToNormal()
    {
        var tid = HostThread.CurrentId;
        // SCHED_OTHER again with the nice value the thread had: sched_setscheduler keeps it, and under SCHED_FIFO it is the base
        if (t_fifo) t_fifo = !HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
        else HostThread.TrySetNice(tid, t_base);
        t_raised = false;
    }

    /// <summary>Sets the calling thread's nice value and makes it the one <see cref="LowerToNormal"/> returns to (a SCHED_FIFO thread goes back to SCHED_OTHER).</summary>
    public static bool SetBase(int nice)
    {
        var tid = HostThread.CurrentId;
        var wasFifo = t_fifo;
        var old = t_base;
        t_base = nice;
        t_raised = false;
        if (wasFifo)
        {
            t_fifo = !HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
            if (old == nice) return !t_fifo;   // its nice value never changed under SCHED_FIFO
        }
        return HostThread.TrySetNice(tid, nice);
    }

    /// <summary>
    /// <see cref="PageTracker.BeforeYielding"/>: a SCHED_FIFO thread that must yield (it waits for a page another,
    /// normal, thread is installing) continues at nice <see cref="LatencyNice"/>, still raised.
    /// </summary>
    private static void LeaveRealTime()
    {
        if (!t_fifo) return;
        var tid = HostThread.CurrentId;
        if (!HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _)) return;
        t_fifo = false;
        HostThread.TrySetNice(tid, LatencyNice);
        Interlocked.Increment(ref s_leftForYield);
    }

    /// <summary>
    /// Measures what one raise and one lower cost on the calling thread (mean of <paramref name="pairs"/>, µs of this
    /// thread's CPU time, so that time spent preempted does not count), with the policy in force: the per-fault price
    /// of switching a vCPU onto the demand path and back.
    /// </summary>
    public static double MeasureSwitchUs(int pairs = 200)
    {
        RaiseForLatency();   // the P/Invoke stubs are compiled now, not measured
        LowerToNormal();
        var start = HostThread.CpuTimeNs;
        for (var i = 0; i < pairs; i++)
        {
            RaiseForLatency();
            LowerToNormal();
        }
        return (HostThread.CpuTimeNs - start) / 1000.0 / pairs;
    }

}

/// <summary>How the demand path's threads are put ahead of the others.</summary>
public enum DemandPathPolicy : byte
{
    /// <summary>Nice values: −15 for the demand path (CFS/EEVDF may still let a running normal thread finish its slice first).</summary>
    Nice = 0,
    /// <summary>SCHED_FIFO at a low real-time priority: runs as soon as it is runnable, ahead of every normal thread.</summary>
    RealTime = 1,
}
