using System.Diagnostics;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm;
using Faultline.Kvm.Threads;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Paging.Engines;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;

namespace Faultline.Migration.Destination;

/// <summary>
/// The destination's vCPU threads: created before the source pauses (each binds its vCPU and waits), they restore
/// the migrated state on their own thread the moment it arrives and re-enter KVM_RUN at once (the shared
/// <see cref="VcpuLoop"/>). The guest, the generation program, finishes the interrupted pass (verifying what it hasn't
/// rewritten yet) and the next one (verifying every page against the generation the first wrote). Memory faults go
/// to the paging engine on the vCPU's own thread, timed.
/// </summary>
internal sealed class DestinationGuest : IDisposable
{
    private readonly GuestMachine _m;
    private readonly IPagingEngine _engine;
    private readonly FirstFailure _failure;
    private readonly TaskProgram? _tasks;              // the mixed workload, else the generation program
    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim _stateArrived = new(false);
    private readonly CountdownEvent _waiting, _resumed, _finished;
    private VcpuState[]? _states;
    private volatile bool _stop;
    private readonly int[] _tids;
    private readonly VcpuLoop?[] _loops;
    private readonly int[] _inspect;        // DescribeUnfinished: 1 asks the vCPU thread for its registers, 2 it answered
    private readonly string?[] _inspected;
    private int _nice;
    private readonly RemotePageSource? _pages;
    private int _disposed;

    public long[] ResumedNs { get; }
    /// <summary>Per vCPU: when it finished its verification pass (CLOCK_MONOTONIC ns).</summary>
    public long[] FinishedNs { get; }
    public ulong[] Mismatches { get; }
    public long[] BlockedNs { get; }
    public long[] Faults { get; }
    public LatencyRecorder FaultLatency { get; }
    /// <summary>Per fault whose page was installed while its vCPU waited (exit engines): installed → the vCPU about to re-enter.</summary>
    public LatencyRecorder WakeLatency { get; }
    /// <summary>The mixed workload, per vCPU: the CPU task's iterations at its resume, when every page was present, and at its end.</summary>
    public ulong[] CpuAtResume { get; }
    public ulong[] CpuAtPostcopyDone { get; }
    public ulong[] CpuAtFinish { get; }
    public TaskProgram? Tasks => _tasks;
    /// <summary>The mixed workload: whether the migrated guest had async page faults enabled (vCPU 0's MSR_KVM_ASYNC_PF_EN).</summary>
    public bool GuestAsyncPfEnabled { get; private set; }
    /// <summary>Every vCPU thread is bound, warmed up and waiting for its state: nothing of theirs runs in the downtime but the restore.</summary>
    public WaitHandle AllWaiting => _waiting.WaitHandle;
    public WaitHandle AllResumed => _resumed.WaitHandle;
    public WaitHandle AllFinished => _finished.WaitHandle;

    /// <param name="postcopyNice">The vCPU threads' nice value until <see cref="PostcopyDone"/> (then 0).</param>
    /// <param name="tasks">The mixed workload's program (the machine built with its kernel); null: the generation program.</param>
    /// <param name="pages">The remote page source, whose install times give <see cref="WakeLatency"/>; null: not measured.</param>
    public DestinationGuest(GuestMachine m, IPagingEngine engine, FirstFailure failure, int postcopyNice = 0, TaskProgram? tasks = null, RemotePageSource? pages = null)
    {
        _m = m; _engine = engine; _failure = failure; _nice = postcopyNice; _tasks = tasks; _pages = pages;
        var n = m.Vcpus.Count;
        CpuAtResume = new ulong[n]; CpuAtPostcopyDone = new ulong[n]; CpuAtFinish = new ulong[n];
        _threads = new Thread[n];
        _tids = new int[n];
        _loops = new VcpuLoop?[n];
        _inspect = new int[n];
        _inspected = new string?[n];
        ResumedNs = new long[n]; FinishedNs = new long[n]; Mismatches = new ulong[n]; BlockedNs = new long[n]; Faults = new long[n];
        _waiting = new CountdownEvent(n);
        _resumed = new CountdownEvent(n);
        _finished = new CountdownEvent(n);
        FaultLatency = new LatencyRecorder((int)Math.Min(m.Ram.PageCount * 2 + 1024, 8_000_000));
        WakeLatency = new LatencyRecorder((int)Math.Min(m.Ram.PageCount + 1024, 4_000_000));
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
    /// <remarks>
    /// The mixed workload's task-kernel state goes into the system region here, every vCPU's before any vCPU runs: vCPU
    /// 0's part holds the globals (the pattern seed, the CPU chunk) that every vCPU's tasks read. Restored by each
    /// vCPU thread for itself, a vCPU that ran before vCPU 0 restored read a chunk of 0 and spun through 2^64
    /// iterations (seen: 2 of 40 runs hung).
    /// </remarks>
    public void Resume(VcpuState[] states)
    {
        if (_tasks is { } tasks)
            foreach (var s in states)
            {
                if (s.TaskKernel is null) throw new MigrationException($"vCPU {s.Id} state: the task kernel's state is missing (the source runs the generation program?)");
                tasks.Restore(s.Id, s.TaskKernel);
                tasks.StopAfterMorePasses(s.Id, 2);   // the interrupted pass, then one whole pass: every page checked after the resume
                CpuAtResume[s.Id] = tasks.CpuIterationsDone(s.Id);
            }
        _states = states;
        _stateArrived.Set();
    }

    private void Loop(int id)
    {
        var hooks = new Hooks(this, id);
        var timed = new TimedExits(this, id);
        try
        {
            var loop = new VcpuLoop(_m.Vcpus[id], hooks, timed);
            Volatile.Write(ref _loops[id], loop);
            timed.Loop = loop;
            if (loop.Run() == VcpuLoopEnd.Finished && hooks.Complete)
            {
                if (_tasks is { } tasks)
                {
                    Mismatches[id] = (ulong)tasks.Read()[id].Mismatches;
                    CpuAtFinish[id] = tasks.CpuIterationsDone(id);
                }
                else Mismatches[id] = hooks.Check!.Mismatches;
                FinishedNs[id] = Clock.NowNs();
                _finished.Signal();
                hooks.Counted = true;
            }
        }
        catch (Exception e)
        {
            _failure.Set(e is FaultlineException ? e : new GuestException($"destination vCPU {id}: {e.Message}"));
        }
        finally
        {
            if (!hooks.Counted && !_finished.IsSet) try { _finished.Signal(); } catch (InvalidOperationException) { }
        }
    }

    /// <summary>
    /// One destination vCPU on the shared vCPU loop: it waits, bound and warmed up, for the migrated state; restores it
    /// on its own thread and runs. The generation program finishes the interrupted pass and runs the next one, checking
    /// every page it visits (<see cref="GenerationCheck"/>): the vCPU is done at that report. The mixed workload's task
    /// kernel state goes back into the system region first, each memory task set to end after the pass it was in and
    /// one whole pass more, and the async-PF registration to the engine's async host: the vCPU is done at its done().
    /// </summary>
    private sealed class Hooks(DestinationGuest g, int id) : IVcpuHooks
    {
        private bool _restored;
        public GenerationCheck? Check { get; private set; }
        public bool Complete { get; private set; }
        public bool Counted { get; set; }

        public void OnThreadStart(VcpuLoop loop)
        {
            var vcpu = loop.Vcpu;
            Warmup.RestorePath(vcpu);
            if (g._tasks is { } t) Warmup.TaskRestorePath(t, id, (g._engine as PagingEngine)?.AsyncPf);
            // the restore is inside the downtime: wake at once when the state lands, then run the guest below the transfer
            ThreadPriority.RaiseForDowntime();
            g._waiting.Signal();
            while (!g._stateArrived.Wait(50)) if (g._stop) return;
            if (g._stop) return;
            DemandTrace.Hop(1_000_000 + (ulong)id + 1, "dst-vcpu-woke");
            var s = g._states![id];
            if (g._tasks is not null) ImportAsyncPf(s);   // the task kernel's state is in place (Resume)
            else if (s.TaskKernel is not null || s.AsyncPf is not null)
                throw new MigrationException($"vCPU {id} state: the source runs the mixed workload, this destination the generation program");
            vcpu.SetSregs(s.Sregs);
            vcpu.SetRegs(s.Regs);
            vcpu.SetEvents(s.Events);
            if (g._tasks is null) Check = new GenerationCheck(s.Regs);
            _restored = true;
            g.ResumedNs[id] = Clock.NowNs();
            g._tids[id] = HostThread.CurrentId;
            // one nice value (and ThreadPriority.Slice, if set) for the whole post-copy: no change per fault
            ThreadPriority.SetBase(Volatile.Read(ref g._nice));
            DemandTrace.Hop(1_000_000 + (ulong)id + 1, "dst-vcpu-resumed");
            g._resumed.Signal();
        }

        private void ImportAsyncPf(VcpuState s)
        {
            if (s.AsyncPf is not { } apf) return;
            var host = (g._engine as PagingEngine)?.AsyncPf;
            // the layout said which protocol the guest speaks and the engine's host was built for it: the sections must agree
            if (host is not null && (s.Sdei is not null) != (host.Protocol == AsyncPfProtocol.Arm))
                throw new MigrationException($"vCPU {id} state: {(s.Sdei is null ? "no SDEI section for the arm" : "an SDEI section for the x86")} async-PF protocol");
            if (id == 0) g.GuestAsyncPfEnabled = (apf.EnableMsr & 1) != 0;   // ENABLED is bit 0 of both protocols' enable word
            if (host is ArmAsyncPf arm && s.Sdei is { } sdei) arm.ImportSdei(id, sdei);
            if (host is not null) host.Import(id, apf);
            else if (apf.Outstanding.Count > 0)
                throw new MigrationException($"vCPU {id} has {apf.Outstanding.Count} async page fault(s) outstanding and this destination runs with --async-pf never");
        }

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (Volatile.Read(ref g._inspect[id]) == 1)
            {
                var r = loop.Vcpu.GetRegs();
                var cpl = loop.Vcpu.GetSregs().Cs.Dpl;
                g._inspected[id] = $"rip 0x{r.Rip:x} cpl {cpl} rsp 0x{r.Rsp:x} rbx 0x{r.Rbx:x} rflags 0x{r.Rflags:x}";
                Volatile.Write(ref g._inspect[id], 2);
            }
            return g._stop || !_restored ? VcpuLoopAction.Finish : VcpuLoopAction.Continue;
        }

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (g._tasks is not null)
            {
                if (call.Op != GuestOp.Done) throw new GuestException($"destination vCPU {id}: the mixed workload reported {call.Op} 0x{call.Value:x}");
                Complete = true;
                return VcpuLoopAction.Finish;
            }
            if (call.Op != GuestOp.Report) throw new GuestException($"destination vCPU {id}: the generation program ended ({call.Op} 0x{call.Value:x})");
            if (!Check!.Observe(call.Value)) return VcpuLoopAction.Continue;
            Complete = Check.IsComplete;
            return VcpuLoopAction.Finish;
        }
    }

    /// <summary>The engine, with each fault exit it handles timed: KVM_RUN returned → page installed, vCPU about to re-enter.</summary>
    private sealed class TimedExits(DestinationGuest g, int id) : IExitHandler
    {
        public VcpuLoop? Loop { get; set; }

        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
        {
            var t0 = Loop!.LastExitTimestamp;
            if (!g._engine.TryHandleExit(vcpu, exit)) return false;
            if (exit.Kind is VcpuExitKind.MemoryFault or VcpuExitKind.Interrupted)
            {
                var now = Stopwatch.GetTimestamp();
                var ns = Clock.ToNanoseconds(now - t0);
                g.FaultLatency.Record(ns);
                // the wake-up's share: a page installed during this wait, the vCPU back only now
                if (g._pages?.LastAnsweredAt(id) is { } at && at > t0) g.WakeLatency.Record(Clock.ToNanoseconds(now - at));
                g.BlockedNs[id] += ns;
                g.Faults[id]++;
            }
            return true;
        }

        public void OnVcpuThreadStart(Vcpu vcpu) => g._engine.OnVcpuThreadStart(vcpu);
        public void OnVcpuLoopStart(VcpuLoop loop) => g._engine.OnVcpuLoopStart(loop);
        public void OnVcpuThreadStop(Vcpu vcpu) => g._engine.OnVcpuThreadStop(vcpu);
    }

    /// <summary>
    /// For a guest that did not finish: where each unfinished vCPU's tasks stand (the mixed workload) and the async
    /// faults the host still holds for it, with whether each page is present. Empty for the generation program.
    /// </summary>
    public string DescribeUnfinished()
    {
        if (_tasks is not { } tasks) return "";
        var guest = tasks.Read();
        var host = (_engine as PagingEngine)?.AsyncPf;
        var parts = new List<string>();
        for (var v = 0; v < guest.Count; v++)
        {
            if (FinishedNs[v] != 0) continue;
            var outstanding = host?.Export(v).Outstanding.Select(f => $"0x{f.Token:x} page {f.Page} {f.Stage.ToString().ToLowerInvariant()}{(_engine.Tracker.IsPresent(f.Page) ? " (present)" : "")}");
            var loop = Volatile.Read(ref _loops[v]);
            var regs = Inspect(v);
            parts.Add($"vCPU {v} ({(loop is null ? "no loop" : $"{loop.Exits} exits, last {loop.LastExit.Kind}")}, {regs}): {string.Join(", ", guest[v].Tasks)}; guest saw {guest[v].NotPresent} not present, {guest[v].Ready} ready, {guest[v].Spurious} spurious"
                + (outstanding is null ? "" : $"; host holds [{string.Join(", ", outstanding)}]"));
        }
        return string.Join("; ", parts);
    }

    /// <summary>Asks vCPU <paramref name="v"/>'s thread (kicked out of KVM_RUN) for its registers; says so if it does not answer within 200 ms.</summary>
    private string Inspect(int v)
    {
        Volatile.Write(ref _inspect[v], 1);
        for (var i = 0; i < 20 && Volatile.Read(ref _inspect[v]) != 2; i++) { _m.Vcpus[v].Kick(); Thread.Sleep(10); }
        return Volatile.Read(ref _inspect[v]) == 2 ? _inspected[v]! : "its thread did not come out of KVM_RUN or the host within 200 ms";
    }

    /// <summary>
    /// Per vCPU thread: how long it has been runnable but waiting for a CPU so far (the second field of
    /// /proc/self/task/TID/schedstat, run_delay), ns; 0 where it cannot be read. Read at two points, the difference is
    /// the scheduler's share of that time, whether the thread was woken from a wait or preempted.
    /// </summary>
    public long[] RunDelayNs()
    {
        var d = new long[_tids.Length];
        for (var i = 0; i < d.Length; i++) d[i] = ThreadSchedStat.Of(Volatile.Read(ref _tids[i]))?.WaitedNs ?? 0;
        return d;
    }

    /// <summary>Every page is present: the vCPUs run at normal priority again (they ran below the transfer's threads until now).</summary>
    public void PostcopyDone()
    {
        if (_tasks is { } tasks) for (var i = 0; i < CpuAtPostcopyDone.Length; i++) CpuAtPostcopyDone[i] = tasks.CpuIterationsDone(i);
        Volatile.Write(ref _nice, 0);
        foreach (var tid in _tids) HostThread.TrySetNice(tid, 0);   // setpriority keeps a slice set with sched_setattr
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
