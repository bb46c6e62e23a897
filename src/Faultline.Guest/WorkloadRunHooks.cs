namespace Faultline.Guest;

/// <summary>
/// <see cref="GuestMachine.Run"/>'s hooks for one vCPU: wait at the start line once bound, collect report() values,
/// and end at done() with its result.
/// </summary>
internal sealed class WorkloadRunHooks(StartLine start) : IVcpuHooks
{
    private readonly List<ulong> _reports = [];
    private readonly List<long> _reportTimes = [];

    /// <summary>Whether this vCPU's thread reached the start line (a thread that failed before must still count as ready).</summary>
    public bool AtStartLine { get; private set; }
    public ulong Result { get; private set; }
    public IReadOnlyList<ulong> Reports => _reports;
    public IReadOnlyList<long> ReportTimestamps => _reportTimes;
    public long DoneTimestamp { get; private set; }

    public void OnThreadStart(VcpuLoop loop)
    {
        AtStartLine = true;
        start.ReadyAndSpin();
    }

    public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
    {
        if (call.Op == GuestOp.Report)
        {
            _reports.Add(call.Value);
            _reportTimes.Add(loop.LastExitTimestamp);
            return VcpuLoopAction.Continue;
        }
        Result = call.Value;
        DoneTimestamp = loop.LastExitTimestamp;
        return VcpuLoopAction.Finish;
    }
}
