using Faultline.Kvm.Threads;
using Faultline.Kvm.Interop;

namespace Faultline.Migration;

/// <summary>
/// Per-thread scheduling (setpriority and sched_setscheduler with a thread id apply to one thread on Linux). Post-copy
/// on a small host has more busy threads than cores; who runs first is set once per thread, never per fault:
/// <list type="bullet">
/// <item>The carriers of the demand path (<see cref="JoinDemandPath"/>: the source's demand server, the destination's
/// urgent receiver, the urgent channel's emulated-delay pumps) run under SCHED_FIFO <see cref="CarrierRtPriority"/> where
/// the kernel allows it (<see cref="DemandPathPolicy.RealTime"/>), else at nice <see cref="LatencyNice"/>. They only block
/// (in recv) between frames and never wait for another thread, so real time there holds no normal thread off its CPU;
/// a fault path waits on the page tracker at its own, normal priority, woken by the carrier's install.</item>
/// <item>The downtime's threads run at nice <see cref="LatencyNice"/> (<see cref="RaiseForDowntime"/>).</item>
/// <item><see cref="BulkNice"/> (−5): the background push and the destination's main receiver, so that every page lands as fast as the link and the CPUs allow.</item>
/// <item>Destination vCPUs: one nice value for the whole post-copy (DestinationOptions.VcpuPostcopyNice), 0 afterwards.</item>
/// </list>
/// The policy is chosen by the caller (<see cref="Choose"/>, from the options; the CLI reads FAULTLINE_RT). Raising
/// priority needs CAP_SYS_NICE (root); without it the threads stay at nice 0, which only costs time.
/// </summary>
internal static class ThreadPriority
{

    public const int LatencyNice = -15;
    public const int BulkNice = -5;
    private const int ProbeRtPriority = 1;
    /// <summary>SCHED_FIFO priority of the threads carrying demands and pages: low, far below the kernel's own real-time threads (≥ 50).</summary>
    public const int CarrierRtPriority = 2;

    [ThreadStatic] private static int t_base;
    [ThreadStatic] private static bool t_fifo;

    private static readonly Lock s_gate = new();
    private static DemandPathPolicy? s_policy;
    private static string s_detail = "";
    private static readonly List<int> s_carriers = [];
    private static bool s_carriersHeld;
    private static TimeSpan s_slice;

    /// <summary>
    /// The EEVDF slice (sched_setattr, Linux ≥ 6.12) every normal thread that <see cref="SetBase"/> sets gets: the push,
    /// the receivers, the vCPUs. With 4–5 runnable threads on 2 cores a thread that becomes runnable waits about one
    /// slice of each thread ahead of it; the kernel's default slice is 3 ms. Zero: the kernel's default.
    /// </summary>
    public static TimeSpan Slice => s_slice;

    /// <summary>Sets <see cref="Slice"/> for this process (an end's options).</summary>
    public static void UseSlice(TimeSpan slice) => s_slice = slice;

    /// <summary>How the demand path is raised in this process (probed once, on first use).</summary>
    public static DemandPathPolicy Policy
    {
        get
        {
            if (s_policy is { } p) return p;
            lock (s_gate)
            {
                if (s_policy is null) Choose(realTime: true);
                return s_policy!.Value;
            }
        }
    }

    /// <summary>What <see cref="Policy"/> means here, or why real time is not used (for the report).</summary>
    public static string PolicyDetail { get { _ = Policy; return s_detail; } }

    /// <summary>
    /// Picks the policy: with <paramref name="realTime"/> false, nice; otherwise real time if the kernel lets this
    /// thread switch to SCHED_FIFO and back.
    /// </summary>
    internal static void Choose(bool realTime)
    {
        lock (s_gate)
        {
            if (!realTime)
            {
                UseNice("SCHED_FIFO turned off");
                return;
            }
            var tid = HostThread.CurrentId;
            if (HostThread.TrySetPolicy(tid, SchedulingPolicy.Fifo, ProbeRtPriority, out var errno))
            {
                HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
                s_policy = DemandPathPolicy.RealTime;
                s_detail = $"SCHED_FIFO {CarrierRtPriority} (demand server, urgent receiver, urgent delay pump); fault paths wait at normal priority";
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

    /// <summary>Whether the calling thread runs under SCHED_FIFO now.</summary>
    public static bool IsRealTime => t_fifo;

    /// <summary>The calling thread's base nice value (<see cref="SetBase"/>).</summary>
    public static int Base => t_base;

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
            if (s_carriersHeld) return HostThread.TrySetNice(tid, LatencyNice);
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
        t_fifo = false;
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
    public static bool RaiseForDowntime() => HostThread.TrySetNice(HostThread.CurrentId, LatencyNice);

    private static bool Raise(int rtPriority)
    {
        var tid = HostThread.CurrentId;
        if (Policy == DemandPathPolicy.RealTime)
        {
            if (HostThread.TrySetPolicy(tid, SchedulingPolicy.Fifo, rtPriority, out var errno)) return t_fifo = true;
            // refused although the probe was allowed (e.g. a thread of another cgroup): nice from now on, for every thread
            lock (s_gate) if (s_policy == DemandPathPolicy.RealTime) UseNice($"SCHED_FIFO refused at run time: {Errno.Name(errno)}");
        }
        return HostThread.TrySetNice(tid, LatencyNice);
    }

    /// <summary>Sets the calling thread's nice value as its base (a SCHED_FIFO thread goes back to SCHED_OTHER).</summary>
    public static bool SetBase(int nice)
    {
        var tid = HostThread.CurrentId;
        if (s_slice > TimeSpan.Zero && !t_fifo)
        {
            t_base = nice;
            return HostThread.TrySetSlice(tid, nice, s_slice, out _);
        }
        var wasFifo = t_fifo;
        var old = t_base;
        t_base = nice;
        if (wasFifo)
        {
            t_fifo = !HostThread.TrySetPolicy(tid, SchedulingPolicy.Normal, 0, out _);
            if (old == nice) return !t_fifo;   // its nice value never changed under SCHED_FIFO
        }
        return HostThread.TrySetNice(tid, nice);
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
