using System.Diagnostics;
using Faultline.Kvm.Threads;

namespace Faultline.Snapshot;

/// <summary>
/// Notices a page handler that is alive but has stopped answering: its socket is open, yet a vCPU has slept in one
/// userfaultfd wait for longer than the timeout. The restoring side cannot see the fault messages (the handler reads
/// them), so it watches the vCPU threads instead, every <see cref="Interval"/>: a thread whose kernel wait channel is
/// <c>handle_userfault</c> and that has not been put on a CPU since the last look (schedstat's count of slices
/// unchanged) is still in the same fault. Where wchan can't be read, a thread that has neither run nor been put on a
/// CPU counts the same way (the only sleep of a restored vCPU here is a userfaultfd wait). A vCPU that finished or
/// has not started yet is not watched.
/// </summary>
internal sealed class HandlerStallWatch(RestoreGuest guest, TimeSpan timeout)
{
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(50);
    private readonly long[] _since = new long[guest.Vcpus];    // when this wait was first seen (Stopwatch ticks; 0: not waiting)
    private readonly ThreadSchedStat[] _seen = new ThreadSchedStat[guest.Vcpus];
    private long _lastLook;

    /// <summary>The vCPU that has waited for one page longer than the timeout, and how long; null while none has.</summary>
    public (int Vcpu, TimeSpan Waited)? Check()
    {
        var now = Stopwatch.GetTimestamp();
        if (Stopwatch.GetElapsedTime(_lastLook, now) < Interval) return null;
        _lastLook = now;
        for (var v = 0; v < _since.Length; v++)
        {
            var tid = guest.ThreadIdOf(v);
            if (tid == 0 || guest.Completed[v] || ThreadSchedStat.Of(tid) is not { } stat) { _since[v] = 0; continue; }
            var channel = ThreadSchedStat.WaitChannelOf(tid);
            var inFault = channel is null ? stat.RanNs == _seen[v].RanNs : channel == "handle_userfault";
            var sameWait = _since[v] != 0 && stat.Slices == _seen[v].Slices;
            if (!inFault) _since[v] = 0;
            else if (!sameWait) _since[v] = now;
            else if (Stopwatch.GetElapsedTime(_since[v], now) is var waited && waited > timeout) return (v, waited);
            _seen[v] = stat;
        }
        return null;
    }
}
