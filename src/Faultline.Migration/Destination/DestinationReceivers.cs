using Faultline.Kvm.Threads;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;
using Faultline.Paging;

namespace Faultline.Migration.Destination;

/// <summary>
/// What a destination takes from its source, on the two receiver threads of each link: the main channel (the vCPU
/// state, the push, the summary) and the urgent channel (demand replies); the rehearsed failures (<c>--inject</c>) fire
/// between frames. A link that breaks past the vCPU state and before the summary is marked lost, to be rejoined
/// (<see cref="Recoverable"/>); any other error is the session's first failure, told to the source before the link
/// goes down. The state here outlives a link: a rejoined link's receivers start where the lost one's stopped.
/// </summary>
internal sealed class DestinationReceivers(DestinationOptions o, DestinationSession session, int vcpus, FirstFailure failure) : IDisposable
{
    private readonly (long AtPages, InjectionKind Kind, TimeSpan Hold)[] _cuts = o.Inject.Resolve(session.Pages.Pages, Random.Shared);
    private readonly ManualResetEventSlim _summaryArrived = new(false);
    private long _pauseNs, _bulkCpuNs;
    private int _nextCut, _complete;
    private SummaryMessage? _summary;

    /// <summary>When the source paused (its clock, from the vCPU state); 0 until the state arrived.</summary>
    public long PauseNs => Volatile.Read(ref _pauseNs);
    public bool StateArrived => PauseNs != 0;
    public WaitHandle SummaryArrived => _summaryArrived.WaitHandle;
    public SummaryMessage Summary => _summary ?? throw new InvalidOperationException("the summary has not arrived");
    /// <summary>The main receiver's CPU time up to the summary.</summary>
    public long BulkReceiverCpuNs => Volatile.Read(ref _bulkCpuNs);
    /// <summary>Every page is present: a closed urgent channel is the end, not a loss.</summary>
    public bool Complete => Volatile.Read(ref _complete) != 0;
    public void MarkComplete() => Volatile.Write(ref _complete, 1);

    /// <summary>Past the vCPU state and before the summary, a broken connection is rejoined (the guest runs here now).</summary>
    public bool Recoverable => o.RecoverTimeout > TimeSpan.Zero && StateArrived && !_summaryArrived.IsSet;

    /// <summary>Starts <paramref name="l"/>'s two receivers.</summary>
    public void Start(DestinationLink l)
    {
        l.Main.Reader.KeepDamagedPages = l.Urgent.Reader.KeepDamagedPages = true;   // a damaged page is asked for again
        l.Main.Reader.StallTimeout = l.Urgent.Reader.StallTimeout = o.StallTimeout;
        l.Urgent.Channel.ReceiveTimeout = null;
        Receiver(l.MainReceiver, l, () => MainLoop(l));
        Receiver(l.UrgentReceiver, l, () => UrgentLoop(l));
    }

    private void Receiver(StandbyThread thread, DestinationLink l, Action body) =>
        thread.Start(() =>
        {
            try { body(); }
            catch (LinkLostException e) when (Recoverable) { l.MarkLost(e); }
            catch (Exception e)
            {
                if (failure.Set(e))
                {
                    session.Pages.Fail(e);
                    // told before the link goes down: a source that only saw it close would wait for a rejoin
                    l.TryAbort(e is FaultlineException ? e.Message : $"internal error: {e.Message}");
                    l.Shutdown();
                }
            }
        });

    private void MainLoop(DestinationLink l)
    {
        var m = l.Main;
        var s = session.Pages;
        // until the vCPU state is handed over the receiver is on the downtime's path, then a bulk receiver (a
        // rejoined link's receiver is one from the start)
        if (!StateArrived) ThreadPriority.RaiseForDowntime();
        else ThreadPriority.SetBase(ThreadPriority.BulkNice);
        while (true)
        {
            l.WaitOutHold();
            var f = m.Read();
            if (f.Damaged) { s.OnDamaged($"checksum mismatch on a {f.Type} frame from {m.Peer}"); continue; }
            switch (f.Type)
            {
                case FrameType.VcpuState:
                    DemandTrace.Hop(1_000_000, "dst-state-rx");
                    var (p, states) = VcpuStateMessage.Decode(f.Payload, vcpus);
                    Volatile.Write(ref _pauseNs, p);
                    session.Guest.Resume(states);
                    ThreadPriority.SetBase(ThreadPriority.BulkNice); // a bulk receiver from now on, ahead of the guest
                    m.Channel.ReceiveTimeout = o.IdleTimeout;
                    break;
                case FrameType.Page: s.OnPage(f.Index, f.PageBytes, (PageFlags)f.Flags); break;
                case FrameType.ZeroPage: s.OnPage(f.Index, default, (PageFlags)f.Flags); break;
                case FrameType.PageRun: s.OnPageRun(f.Index, f.RunCount, f.RunPages, (PageFlags)f.Flags, f.RunCrcs); break;
                case FrameType.PushDone: s.OnPushDone(); break;
                case FrameType.Summary:
                    Volatile.Write(ref _bulkCpuNs, HostThread.CpuTimeNs);
                    _summary = SummaryMessage.Decode(f.Payload);
                    _summaryArrived.Set();
                    return;
                default: throw new MigrationException($"protocol error: {f.Type} frame on the main channel");
            }
            MaybeInject(l);
        }
    }

    private void UrgentLoop(DestinationLink l)
    {
        var u = l.Urgent;
        var s = session.Pages;
        ThreadPriority.JoinDemandPath();
        try
        {
            while (true)
            {
                Frame f;
                l.WaitOutHold();
                try { f = u.Read(); }
                catch (MigrationException) when (Complete) { return; }
                if (f.Damaged) { s.OnDamaged($"checksum mismatch on a {f.Type} frame from {u.Peer}"); continue; }
                switch (f.Type)
                {
                    case FrameType.Page: s.OnPage(f.Index, f.PageBytes, (PageFlags)f.Flags); break;
                    case FrameType.ZeroPage: s.OnPage(f.Index, default, (PageFlags)f.Flags); break;
                    default: throw new MigrationException($"protocol error: {f.Type} frame on the urgent channel");
                }
                MaybeInject(l);
            }
        }
        finally { ThreadPriority.LeaveDemandPath(); }
    }

    /// <summary>Rehearsed failures fire between frames (either receiver), each once, at its count of pages received.</summary>
    private void MaybeInject(DestinationLink l)
    {
        var s = session.Pages;
        while (true)
        {
            var next = Volatile.Read(ref _nextCut);
            if (next >= _cuts.Length || s.ReceivedCount < _cuts[next].AtPages) return;
            if (Interlocked.CompareExchange(ref _nextCut, next + 1, next) != next) continue;
            var (_, kind, hold) = _cuts[next];
            MigrationLog.Injected(o.Logger, Injection.WordOf(kind), s.ReceivedCount);
            switch (kind)
            {
                case InjectionKind.CutLink: l.Cut(); break;
                case InjectionKind.Delay: l.Hold(hold); break;
                case InjectionKind.Corrupt: l.Main.Reader.DamageNextPageFrame(); break;
                case InjectionKind.KillSource: o.KillSource!(); break;
                default: o.KillDestination!(); break;
            }
        }
    }

    public void Dispose() => _summaryArrived.Dispose();
}
