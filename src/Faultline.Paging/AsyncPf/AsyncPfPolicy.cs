using System.Diagnostics;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// Decides per fault whether an async page fault pays: it costs the vCPU two notifications (an injected #PF, a
/// "page ready" interrupt and its handlers, tens of µs each on this host), and it gains the time the page takes to
/// come, which the guest spends on another task. So: async when the expected wait exceeds the notification cost.
/// The wait is what the source expects (a fixed latency, the link's measured round trip) plus what is queued ahead on
/// that vCPU; the cost starts at <see cref="AsyncPfOptions.PriorNotifyCost"/> and follows what is measured (each
/// "page ready" from its post to the guest's ACK, doubled for the "not present" half, a moving average). This is the
/// answer to the RFC's review: one bit per gfn cannot tell a 30 µs fault from a 10 ms one; the VMM can.
/// </summary>
public sealed class AsyncPfPolicy(AsyncPfOptions options)
{
    private long _costTicks = (long)(options.PriorNotifyCost.TotalSeconds * Stopwatch.Frequency);

    public AsyncPfMode Mode => options.Mode;
    /// <summary>The notification cost the policy uses now.</summary>
    public TimeSpan NotifyCost => TimeSpan.FromSeconds((double)Interlocked.Read(ref _costTicks) / Stopwatch.Frequency);

    /// <summary>Whether a fault expected to wait <paramref name="expectedWait"/> should be async.</summary>
    public bool PaysOff(TimeSpan expectedWait) => Mode switch
    {
        AsyncPfMode.Always => true,
        AsyncPfMode.Never => false,
        _ => expectedWait.TotalSeconds * Stopwatch.Frequency > Interlocked.Read(ref _costTicks),
    };

    /// <summary>
    /// A measured "page ready" round trip (post → ACK), in Stopwatch ticks. A sample is clamped to twice the estimate
    /// before it is averaged: the round trip has a tail of whole host ticks here (a kick that waits for the target CPU's
    /// tick, HOST.md), which says nothing of what the next notification costs, and unclamped it would swing the policy
    /// to sync for every fault after one slow kick (measured: 20 of 204 faults async at 1 ms before the clamp).
    /// </summary>
    public void OnReadyMeasured(long ticks)
    {
        if (ticks <= 0) return;
        var now = Interlocked.Read(ref _costTicks);
        var sample = Math.Min(2 * ticks, 2 * now);
        Interlocked.Exchange(ref _costTicks, now + (sample - now) / 8);
    }
}
