using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Threads;
using Faultline.Migration.Guest;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Paging.Engines;

namespace Faultline.Migration.Destination;

/// <summary>
/// The destination's vCPU threads: created before the source pauses (each binds its vCPU and waits), they restore
/// the migrated state on their own thread the moment it arrives and re-enter KVM_RUN at once. Each finishes the
/// interrupted pass (verifying what it hasn't reached yet), then runs Verify over its whole range against the
/// generation that pass wrote. Memory faults go to the paging engine on the vCPU's own thread, timed.
/// </summary>
internal sealed class DestinationGuest : IDisposable
{
    private readonly GuestMachine _m;
    private readonly IPagingEngine _engine;
    private readonly FirstFailure _failure;
    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim _stateArrived = new(false);
    private readonly CountdownEvent _waiting, _resumed, _finished;
    private VcpuState[]? _states;
    private volatile bool _stop;
    private readonly int[] _tids;
    private int _nice;
    private readonly TimeSpan _slice;
    private int _disposed;

    public long[] ResumedNs { get; }
    /// <summary>Per vCPU: when it finished its verification pass (CLOCK_MONOTONIC ns).</summary>
    public long[] FinishedNs { get; }
    public ulong[] Mismatches { get; }
    public long[] BlockedNs { get; }
    public long[] Faults { get; }
    public LatencyRecorder FaultLatency { get; }
    /// <summary>Every vCPU thread is bound, warmed up and waiting for its state: nothing of theirs runs in the downtime but the restore.</summary>
    public WaitHandle AllWaiting => _waiting.WaitHandle;
    public WaitHandle AllResumed => _resumed.WaitHandle;
    public WaitHandle AllFinished => _finished.WaitHandle;

    /// <param name="postcopyNice">The vCPU threads' nice value until <see cref="PostcopyDone"/> (then 0).</param>
    /// <param name="slice">The vCPU threads' EEVDF slice request (zero: the kernel's default).</param>
    public DestinationGuest(GuestMachine m, IPagingEngine engine, FirstFailure failure, int postcopyNice = 0, TimeSpan slice = default)
    {
        _m = m; _engine = engine; _failure = failure; _nice = postcopyNice; _slice = slice;
        var n = m.Vcpus.Count;
        _threads = new Thread[n];
        _tids = new int[n];
        ResumedNs = new long[n]; FinishedNs = new long[n]; Mismatches = new ulong[n]; BlockedNs = new long[n]; Faults = new long[n];
        _waiting = new CountdownEvent(n);
        _resumed = new CountdownEvent(n);
        _finished = new CountdownEvent(n);
        FaultLatency = new LatencyRecorder((int)Math.Min(m.Ram.PageCount * 2 + 1024, 8_000_000));
    }

    public void Start()
    {
        for (var i = 0; i < _threads.Length; i++)
        {
            var id = i;
            _threads[i] = new Thread(() => Loop(id)) { Name = $"fl-vcpu{id}", IsBackground = true };
            _threads[i].Start();
        }
    }

    /// <summary>Receiver thread: the paused vCPUs' state is here; every vCPU thread restores its own and runs.</summary>
    public void Resume(VcpuState[] states)
    {
        _states = states;
        _stateArrived.Set();
    }

    private void Loop(int id)
    {
        var vcpu = _m.Vcpus[id];
        var counted = false;
        try
        {
            vcpu.BindToCurrentThread();
            _engine.OnVcpuThreadStart(vcpu);
            Warmup.RestorePath(vcpu);
            // the restore is inside the downtime: wake at once when the state lands, then run the guest below the transfer
            ThreadPriority.RaiseForDowntime();
            _waiting.Signal();
            while (!_stateArrived.Wait(50)) if (_stop) return;
            if (_stop) return;
            DemandTrace.Hop(1_000_000 + (ulong)id + 1, "dst-vcpu-woke");
            var s = _states![id];
            vcpu.SetSregs(s.Sregs);
            vcpu.SetRegs(s.Regs);
            vcpu.SetEvents(s.Events);
            var progress = s.Workload ?? throw new MigrationException($"vCPU {id} state has no workload section: nothing to verify");
            ResumedNs[id] = Clock.NowNs();
            _tids[id] = HostThread.CurrentId;
            ThreadPriority.SetBase(Volatile.Read(ref _nice));
            // a short slice: woken when its page lands, the vCPU preempts a bulk thread at once (EEVDF), no priority change per fault
            if (_slice > TimeSpan.Zero) HostThread.TrySetSlice(HostThread.CurrentId, Volatile.Read(ref _nice), _slice, out _);
            DemandTrace.Hop(1_000_000 + (ulong)id + 1, "dst-vcpu-resumed");
            _resumed.Signal();
            var verifying = false;
            while (true)
            {
                var exit = vcpu.Run();
                var t0 = Stopwatch.GetTimestamp();
                if (GuestCall.TryDecode(exit, out var call))
                {
                    if (call.Op == GuestOp.Report) continue;
                    if (call.Op != GuestOp.Done) throw new GuestException($"destination vCPU {id}: guest call {call.Op} 0x{call.Value:x}");
                    // pass 0 (Write) reports pages written, not mismatches
                    if (verifying || progress.Workload == Workload.VerifyThenWrite) Mismatches[id] += call.Value;
                    if (verifying) break;
                    verifying = true;
                    var verify = new WorkloadArgs(progress.Start, progress.End, progress.WriteSeed, progress.QwordsPerPage);
                    _m.Image.Boot(vcpu, Workload.Verify, verify, PrivilegeLevel.User);
                    continue;
                }
                var handled = _engine.TryHandleExit(vcpu, exit);
                var ns = Clock.ToNanoseconds(Stopwatch.GetTimestamp() - t0);
                if (handled)
                {
                    if (exit.Kind == VcpuExitKind.MemoryFault || exit.Kind == VcpuExitKind.Interrupted)
                    {
                        FaultLatency.Record(ns);
                        BlockedNs[id] += ns;
                        Faults[id]++;
                    }
                    continue;
                }
                if (exit.Kind == VcpuExitKind.Interrupted)
                {
                    if (_stop) return;
                    continue;
                }
                throw GuestMachine.Unexpected(vcpu, exit);
            }
            FinishedNs[id] = Clock.NowNs();
            _finished.Signal();
            counted = true;
        }
        catch (Exception e)
        {
            _failure.Set(e is FaultlineException ? e : new GuestException($"destination vCPU {id}: {e.Message}"));
        }
        finally
        {
            try { _engine.OnVcpuThreadStop(vcpu); } catch (Exception) { /* the failure is recorded already */ }
            vcpu.UnbindThread();
            if (!counted && !_finished.IsSet) try { _finished.Signal(); } catch (InvalidOperationException) { }
        }
    }

    /// <summary>Every page is present: the vCPUs run at normal priority again (they ran below the transfer's threads until now).</summary>
    public void PostcopyDone()
    {
        Volatile.Write(ref _nice, 0);
        foreach (var tid in _tids)
            if (_slice > TimeSpan.Zero) HostThread.TrySetSlice(tid, 0, _slice, out _);
            else HostThread.TrySetNice(tid, 0);
    }

    /// <summary>Stops every vCPU thread (waiting, running or blocked on a page) and joins them.</summary>
    public void Stop()
    {
        _stop = true;
        foreach (var v in _m.Vcpus) v.Kick();
        _stateArrived.Set();
        foreach (var t in _threads)
        {
            if (t is null) continue;
            while (!t.Join(100)) foreach (var v in _m.Vcpus) v.Kick();
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Stop();
        _stateArrived.Dispose();
        _waiting.Dispose();
        _resumed.Dispose();
        _finished.Dispose();
    }
}
