using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Threads;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Paging.Engines;

namespace Faultline.Snapshot;

/// <summary>
/// The restored guest's vCPU threads: each restores its saved state on its own thread and enters KVM_RUN at once (the
/// shared <see cref="VcpuLoop"/>), its memory faults going to the paging engine, timed from KVM_RUN's return to the
/// page installed. The guest is the generation program: it finishes the interrupted pass and runs the next, checking
/// every page it visits against the generation the snapshot holds (<see cref="GenerationCheck"/>); a vCPU is done at
/// that report.
/// <para>The threads are spawned when this is made, before the VM exists, and wait for <see cref="Start"/>: spawning a
/// thread took 1.5–8 ms on this busy 2-core host, waking a waiting one takes microseconds, so the spawn is not on the
/// way to the first instruction. Until the VM exists they are idle, so they take the restore's start-up jobs
/// (<c>early</c>: job i on thread i mod n, in order; building the VM, choosing the engine) instead of more threads or the
/// thread pool. No vCPU is touched before <see cref="Start"/>, which the restore gives only once the snapshot has passed
/// its checks. Waits here block without spinning: a spinning waiter takes one of the two CPUs from the threads it waits
/// for.</para>
/// </summary>
internal sealed class RestoreGuest : IDisposable
{
    private GuestMachine? _m;
    private IExitHandler? _engine;
    private IReadOnlyList<VcpuState> _states = [];
    private readonly Thread[] _threads;
    private readonly VcpuLoop?[] _loops;
    private readonly int[] _tids;
    private GenerationCheck[] _checks = [];
    private readonly ManualResetEventSlim _go = new(false, spinCount: 0);
    private readonly IReadOnlyList<Action> _early;
    private volatile bool _started;
    private long _startTimestamp;   // written before _go is set, read by the vCPU threads after they pass it
    private long _firstRun;
    private readonly ManualResetEventSlim _ranOrFailed = new(false, spinCount: 0);
    private volatile Exception? _error;

    /// <param name="early">Start-up jobs for the waiting threads (they must not throw; <see cref="StartupStep{T}.Run"/> keeps an error); Stop and Dispose wait for them.</param>
    public RestoreGuest(int vcpus, IReadOnlyList<Action>? early = null)
    {
        _early = early ?? [];
        _threads = new Thread[vcpus];
        _loops = new VcpuLoop?[vcpus];
        Mismatches = new ulong[vcpus];
        Completed = new bool[vcpus];
        _tids = new int[vcpus];
        SleptNs = new long[vcpus];
        FaultLatency = new LatencyRecorder(1);
        for (var i = 0; i < vcpus; i++)
        {
            var id = i;
            _threads[i] = new Thread(() => Loop(id)) { Name = $"fl-vcpu{id}", IsBackground = true };
            _threads[i].Start();
        }
    }

    /// <summary>When the first vCPU entered KVM_RUN with its restored state (Stopwatch ticks; 0: not yet).</summary>
    public long FirstRunTimestamp => Interlocked.Read(ref _firstRun);
    public ulong[] Mismatches { get; }
    public bool[] Completed { get; }
    /// <summary>Memory-fault exits, KVM_RUN returned → page installed (exit-based engines only).</summary>
    public LatencyRecorder FaultLatency { get; private set; }
    public Exception? Error => _error;
    /// <summary>vCPU <paramref name="vcpu"/>'s host thread id, 0 until its thread runs the machine.</summary>
    public int ThreadIdOf(int vcpu) => Volatile.Read(ref _tids[vcpu]);
    public int Vcpus => _threads.Length;
    /// <summary>
    /// Per vCPU: how long its thread slept in the kernel while it ran the guest (its wall time minus the time it ran and
    /// the time it waited for a CPU, from <see cref="Start"/> to its end, by schedstat; 0 where it can't be read). A vCPU
    /// sleeps when it waits for a page in the userfaultfd or on the page tracker.
    /// </summary>
    public long[] SleptNs { get; }

    /// <summary>Lets the waiting vCPU threads run the machine (one per vCPU), with the engine and their saved states.</summary>
    public void Start(GuestMachine m, IExitHandler engine, IReadOnlyList<VcpuState> states)
    {
        if (m.Vcpus.Count != _threads.Length || states.Count != _threads.Length) throw new ArgumentException($"{_threads.Length} vCPU threads for a machine of {m.Vcpus.Count} and {states.Count} states");
        _m = m; _engine = engine; _states = states;
        FaultLatency = new LatencyRecorder((int)Math.Min(m.Ram.PageCount + 1024, SnapshotPageSource.LatencySamples));
        _checks = states.Select(s => new GenerationCheck(s.Regs)).ToArray();   // made here: the vCPU threads allocate nothing
        _started = true;
        _startTimestamp = Stopwatch.GetTimestamp();
        _go.Set();
    }

    /// <summary>Waits until a vCPU has entered KVM_RUN with its restored state, or one has failed before.</summary>
    public void WaitForFirstRun(TimeSpan timeout)
    {
        if (!_ranOrFailed.Wait(timeout)) throw new GuestException($"no restored vCPU entered KVM_RUN within {timeout.TotalSeconds:0} s");
    }

    /// <summary>Waits for every vCPU to finish; false when <paramref name="stop"/> said to give up first (the caller then stops them).</summary>
    public bool Wait(TimeSpan timeout, Func<bool> stop)
    {
        var sw = Stopwatch.StartNew();
        foreach (var t in _threads)
            while (!t.Join(5))
            {
                if (stop()) return false;
                if (sw.Elapsed > timeout) throw new GuestException($"the restored guest did not finish within {timeout.TotalSeconds:0} s");
            }
        return true;
    }

    private void Loop(int id)
    {
        var tid = HostThread.CurrentId;
        Volatile.Write(ref _tids[id], tid);
        for (var j = id; j < _early.Count; j += _threads.Length)
        {
            try { _early[j](); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, new GuestException($"restore start-up job {j}: {e.Message}"), null); }
        }
        // read after the jobs and before the wait, not on the way to the first instruction; the wait's sleep is not
        // counted (the time counts from Start)
        var stat0 = ThreadSchedStat.Of(tid);
        _go.Wait();
        if (!_started) return;   // disposed before the VM was built
        var hooks = new Hooks(this, id);
        var timed = new TimedExits(this);
        try
        {
            var loop = new VcpuLoop(_m!.Vcpus[id], hooks, timed);
            timed.Loop = loop;
            Volatile.Write(ref _loops[id], loop);
            if (loop.Run() == VcpuLoopEnd.Finished && hooks.Check is { IsComplete: true } check)
            {
                Mismatches[id] = check.Mismatches;
                Completed[id] = true;
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, e is FaultlineException ? e : new GuestException($"restored vCPU {id}: {e.Message}"), null);
        }
        finally
        {
            if (stat0 is { } a && ThreadSchedStat.Of(tid) is { } b)
                SleptNs[id] = Math.Max(0, (long)Stopwatch.GetElapsedTime(_startTimestamp).TotalNanoseconds - (b.RanNs - a.RanNs) - (b.WaitedNs - a.WaitedNs));
            _ranOrFailed.Set();
        }
    }

    private sealed class Hooks(RestoreGuest g, int id) : IVcpuHooks
    {
        private bool _ran;
        public GenerationCheck? Check { get; private set; }

        public void OnThreadStart(VcpuLoop loop)
        {
            var s = g._states[id];
            var v = loop.Vcpu;
            v.SetSregs(s.Sregs);
            v.SetRegs(s.Regs);
            v.SetEvents(s.Events);
            Check = g._checks[id];
        }

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (!_ran)
            {
                _ran = true;
                if (Interlocked.CompareExchange(ref g._firstRun, Stopwatch.GetTimestamp(), 0) == 0) g._ranOrFailed.Set();
            }
            return VcpuLoopAction.Continue;
        }

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (call.Op != GuestOp.Report) throw new GuestException($"restored vCPU {id}: the generation program ended ({call.Op} 0x{call.Value:x})");
            return Check!.Observe(call.Value) ? VcpuLoopAction.Finish : VcpuLoopAction.Continue;
        }
    }

    /// <summary>The engine, with each memory-fault exit it handles timed.</summary>
    private sealed class TimedExits(RestoreGuest g) : IExitHandler
    {
        public VcpuLoop? Loop { get; set; }

        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
        {
            var t0 = Loop!.LastExitTimestamp;
            if (!g._engine!.TryHandleExit(vcpu, exit)) return false;
            if (exit.Kind == VcpuExitKind.MemoryFault) g.FaultLatency.Record((long)Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
            return true;
        }

        public void OnVcpuThreadStart(Vcpu vcpu) => g._engine!.OnVcpuThreadStart(vcpu);
        public void OnVcpuThreadStop(Vcpu vcpu) => g._engine!.OnVcpuThreadStop(vcpu);
        public void OnVcpuLoopStart(VcpuLoop loop) => g._engine!.OnVcpuLoopStart(loop);
    }

    /// <summary>Stops every vCPU (running or blocked on a page) and joins them; threads never started are released.</summary>
    public void Stop()
    {
        _go.Set();
        foreach (var l in _loops) l?.RequestStop();
        foreach (var t in _threads)
        {
            while (!t.Join(100))
            {
                foreach (var l in _loops) l?.RequestStop();
                if (_m is not null) foreach (var v in _m.Vcpus) v.Kick();
            }
        }
    }

    public void Dispose()
    {
        Stop();
        _go.Dispose();
        _ranOrFailed.Dispose();
    }
}
