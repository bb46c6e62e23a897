using System.Diagnostics;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;
using Faultline.Paging.Sources;
using Faultline.Migration.Protocol;

namespace Faultline.Migration.Source;

/// <summary>
/// The source's running guest: one thread per vCPU running the generation program (<see cref="GenerationProgram"/>:
/// passes that verify the last generation and write the next, all its state in registers), or the mixed workload (the
/// task kernel in continuous mode, its state in registers and the system region), until <see cref="Pause"/>
/// kicks them out of KVM_RUN. Each vCPU thread then captures its own state (no vCPU ioctl
/// from a foreign thread while KVM_RUN runs, HOST.md) and parks: the guest never runs on the source again.
/// <para>While a pause is imminent (<see cref="OpenPauseWindow"/> to <see cref="Pause"/>), each vCPU thread also arms
/// a <see cref="SelfKickTimer"/> on its own CPU, so that it leaves KVM_RUN and sees the pause flag within one period
/// even when the cross-CPU kick waits for the target CPU's next host tick (HOST.md); whichever comes first stops it.</para>
/// </summary>
internal sealed class SourceGuest : IDisposable
{
    private readonly GuestMachine _m;
    private readonly int _qwordsPerPage;
    private readonly ulong _writeBytesPerVcpu;
    private readonly Thread[] _threads;
    private readonly long[] _passesDone;
    private readonly AccessOrder _order;
    private readonly TaskProgram? _tasks;             // the mixed workload, else the generation program
    private readonly IAsyncPfRegistration? _asyncPf;
    private readonly VcpuState?[] _captured;
    private readonly bool[] _parkedFlags;
    private readonly CountdownEvent _parked;
    private readonly ManualResetEventSlim _release = new(false);
    private readonly TimeSpan _selfKickPeriod;
    private readonly long[] _stopTs, _parkedTs, _armedTicks, _selfKicks;
    private readonly VcpuStopCause[] _stopCause;
    private long _windowOpenTs, _pauseTs;
    private int _armedTimers;
    private int _running;                              // vCPUs not yet parked by the pause
    private Action<VcpuState[]>? _onAllParked;
    private volatile bool _pause, _stop, _pauseImminent;
    private volatile Exception? _error;
    private int _disposed;

    /// <param name="selfKickPeriod">The self-kick timers' period while a pause is imminent; zero: no timer, only the cross-CPU kick.</param>
    public SourceGuest(GuestMachine machine, int qwordsPerPage, ulong writeBytesPerVcpu, TimeSpan selfKickPeriod, AccessOrder order)
        : this(machine, selfKickPeriod)
    {
        _order = order;
        _qwordsPerPage = qwordsPerPage;
        _writeBytesPerVcpu = writeBytesPerVcpu;
    }

    /// <summary>
    /// The mixed workload: guest RAM is filled with the pattern its memory tasks check, the task kernel booted on every
    /// vCPU (here, before the vCPU threads start) and its async-PF registration kept (<paramref name="asyncPf"/>: x86's
    /// MSRs, or arm's ENABLE word and SDEI events) to travel with the state, beside each vCPU's part of the task kernel.
    /// </summary>
    public SourceGuest(GuestMachine machine, TaskProgram tasks, IAsyncPfRegistration asyncPf, TimeSpan selfKickPeriod) : this(machine, selfKickPeriod)
    {
        _tasks = tasks;
        _asyncPf = asyncPf;
        var ram = machine.Ram;
        for (ulong off = 0; off < ram.Size; off += GuestAddress.PageSize)
            PatternPageSource.Fill(ram.Base + off, tasks.Config.Seed, ram.Span(ram.Base + off, (int)GuestAddress.PageSize));
        tasks.Boot();
    }

    private SourceGuest(GuestMachine machine, TimeSpan selfKickPeriod)
    {
        _m = machine;
        _selfKickPeriod = selfKickPeriod > TimeSpan.Zero ? selfKickPeriod : TimeSpan.Zero;
        var n = machine.Vcpus.Count;
        _threads = new Thread[n];
        _passesDone = new long[n];
        _captured = new VcpuState?[n];
        _parkedFlags = new bool[n];
        _parked = new CountdownEvent(n);
        _stopTs = new long[n];
        _parkedTs = new long[n];
        _armedTicks = new long[n];
        _selfKicks = new long[n];
        _stopCause = new VcpuStopCause[n];
    }

    public Exception? Error => _error;

    /// <summary>vCPU threads whose self-kick timer is armed right now.</summary>
    public int ArmedTimers => Volatile.Read(ref _armedTimers);

    public void Start()
    {
        for (var i = 0; i < _threads.Length; i++)
        {
            var id = i;
            _threads[i] = new Thread(() => Loop(id)) { Name = $"fl-vcpu{id}", IsBackground = true };
            _threads[i].Start();
        }
    }

    /// <summary>Waits until every vCPU has finished <paramref name="passes"/> whole passes (so its whole range holds data).</summary>
    public void WaitForPasses(long passes, TimeSpan timeout, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (_error is { } e) throw e as FaultlineException ?? new GuestException($"source guest failed: {e.Message}");
            var min = long.MaxValue;
            for (var i = 0; i < _passesDone.Length; i++) min = Math.Min(min, _tasks is { } t ? (long)t.PassesDone(i) : Interlocked.Read(ref _passesDone[i]));
            if (min >= passes) return;
            if (sw.Elapsed > timeout) throw new GuestException($"source guest did not finish {passes} pass(es) within {timeout.TotalSeconds:0.#} s");
            ct.ThrowIfCancellationRequested();
            Thread.Sleep(1);
        }
    }

    /// <summary>
    /// A pause is coming (the destination is building its VM): each vCPU thread arms its self-kick timer at its next
    /// exit, and one kick now makes that exit happen. No-op when the timer is off.
    /// </summary>
    public void OpenPauseWindow()
    {
        if (_selfKickPeriod == TimeSpan.Zero || _pauseImminent) return;
        _windowOpenTs = Stopwatch.GetTimestamp();
        _pauseImminent = true;
        foreach (var v in _m.Vcpus) v.Kick();
    }

    /// <summary>No pause after all (the destination failed before Ready): the vCPU threads disarm their timers.</summary>
    public void ClosePauseWindow()
    {
        if (!_pauseImminent) return;
        _pauseImminent = false;
        foreach (var v in _m.Vcpus) v.Kick();
    }

    /// <summary>
    /// Stops every vCPU (kick, no re-entry) and returns their state, captured on their own threads.
    /// <paramref name="onAllParked"/>, if given, runs on the thread of the last vCPU to park, with every vCPU's state,
    /// before this returns: that thread is on a CPU already, while waking the pausing thread costs a cross-CPU wake-up
    /// (on this host often a host tick). An exception it throws is what this throws.
    /// </summary>
    public VcpuState[] Pause(TimeSpan timeout, Action<VcpuState[]>? onAllParked = null)
    {
        if (_pause)
        {
            // paused by an earlier attempt (its destination failed after the pause): the vCPUs are parked already
            if (_error is { } pe) throw pe as FaultlineException ?? new GuestException($"source guest failed: {pe.Message}");
            var parked = CapturedStates();
            onAllParked?.Invoke(parked);
            return parked;
        }
        _onAllParked = onAllParked;
        _running = _threads.Length;
        _pauseTs = Stopwatch.GetTimestamp();
        _pause = true;
        foreach (var v in _m.Vcpus) v.Kick();
        if (!_parked.Wait(timeout)) throw new GuestException($"source vCPUs did not stop within {timeout.TotalMilliseconds:0} ms");
        if (_error is { } e) throw e as FaultlineException ?? new GuestException($"source guest failed: {e.Message}");
        return CapturedStates();
    }

    private VcpuState[] CapturedStates()
    {
        var states = new VcpuState[_captured.Length];
        for (var i = 0; i < states.Length; i++) states[i] = _captured[i]!;
        return states;
    }

    /// <summary>How the last <see cref="Pause"/> went (valid after it returned).</summary>
    public SourcePauseStats PauseStats()
    {
        var n = _stopTs.Length;
        var stop = new double[n];
        var parked = new double[n];
        var armed = new double[n];
        for (var i = 0; i < n; i++)
        {
            stop[i] = Stopwatch.GetElapsedTime(_pauseTs, _stopTs[i]).TotalMilliseconds;
            parked[i] = Stopwatch.GetElapsedTime(_pauseTs, _parkedTs[i]).TotalMilliseconds;
            armed[i] = _armedTicks[i] * 1000.0 / Stopwatch.Frequency;
        }
        var window = _windowOpenTs != 0 ? Stopwatch.GetElapsedTime(_windowOpenTs, _pauseTs).TotalMilliseconds : 0;
        return new SourcePauseStats(_selfKickPeriod.TotalMicroseconds, stop, (VcpuStopCause[])_stopCause.Clone(), parked, window, armed, (long[])_selfKicks.Clone());
    }

    private void Loop(int id)
    {
        var hooks = new Hooks(this, id);
        try { new VcpuLoop(_m.Vcpus[id], hooks, _asyncPf).Run(); }
        catch (Exception e)
        {
            _error ??= e;
            if (!hooks.ParkedSignalled) try { _parked.Signal(); } catch (InvalidOperationException) { }
        }
    }

    /// <summary>
    /// One source vCPU on the shared vCPU loop: the generation program runs until the pause; before each KVM_RUN the
    /// thread arms or disarms its self-kick timer as a pause nears, and at the pause captures its own state and parks.
    /// </summary>
    private sealed class Hooks(SourceGuest g, int id) : IVcpuHooks
    {
        private SelfKickTimer? _timer;
        private long _armedSince, _kicks, _selfKicks;
        public bool ParkedSignalled { get; private set; }

        public void OnThreadStart(VcpuLoop loop)
        {
            var vcpu = loop.Vcpu;
            if (g._selfKickPeriod > TimeSpan.Zero) _timer = SelfKickTimer.CreateForCurrentThread(vcpu);
            if (g._tasks is null)
            {
                var (start, _) = g._m.RangeOf(id);
                var args = new WorkloadArgs(start.Value, start.Value + g._writeBytesPerVcpu, 0, g._qwordsPerPage, g._order, OrderSeed: (ulong)id * 7919 + 1);
                g._m.Image.Boot(vcpu, Workload.Generations, args, PrivilegeLevel.User);
            }
            g.Capture(vcpu, id);      // warm-up: the pause path is JIT-compiled now, not inside the downtime
            _kicks = vcpu.KicksDelivered;
            _selfKicks = vcpu.SelfKicksDelivered;
        }

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            var vcpu = loop.Vcpu;
            if (g._stop) return VcpuLoopAction.Finish;
            if (g._pause)
            {
                g._stopTs[id] = Stopwatch.GetTimestamp();
                g._stopCause[id] = StopCause(vcpu.KicksDelivered - _kicks, vcpu.SelfKicksDelivered - _selfKicks);
                if (_armedSince != 0) { g._armedTicks[id] += g._stopTs[id] - _armedSince; _armedSince = 0; Interlocked.Decrement(ref g._armedTimers); }
                g._selfKicks[id] = vcpu.SelfKicksDelivered;
                g.Capture(vcpu, id);
                g._parkedTs[id] = Stopwatch.GetTimestamp();
                g._parkedFlags[id] = true;
                if (Interlocked.Decrement(ref g._running) == 0) g._onAllParked?.Invoke(g.CapturedStates());
                g._parked.Signal();
                ParkedSignalled = true;
                _timer?.Dispose();   // after the downtime's signal: timer_delete is not on the pause path
                _timer = null;
                g._release.Wait();
                return VcpuLoopAction.Finish;
            }
            if (_timer is not null && _timer.IsArmed != g._pauseImminent)
            {
                // armed here, on this thread: the timer's hrtimer is queued on the CPU this vCPU runs on
                if (g._pauseImminent)
                {
                    _timer.Arm(g._selfKickPeriod);
                    _armedSince = Stopwatch.GetTimestamp();
                    Interlocked.Increment(ref g._armedTimers);
                }
                else
                {
                    _timer.Disarm();
                    g._armedTicks[id] += Stopwatch.GetTimestamp() - _armedSince;
                    _armedSince = 0;
                    Interlocked.Decrement(ref g._armedTimers);
                }
            }
            _kicks = vcpu.KicksDelivered;
            _selfKicks = vcpu.SelfKicksDelivered;
            return VcpuLoopAction.Continue;
        }

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (g._tasks is not null)
            {
                // the task kernel reports its boot (TSC) once; its memory tasks never end here (no pass is set to be their last)
                if (call.Op != GuestOp.Report) throw new GuestException($"source vCPU {id}: the mixed workload ended ({call.Op} 0x{call.Value:x})");
                return VcpuLoopAction.Continue;
            }
            if (call.Op != GuestOp.Report) throw new GuestException($"source vCPU {id}: the generation program ended ({call.Op} 0x{call.Value:x})");
            var r = GenerationReport.Decode(call.Value);
            if (r.Mismatches != 0) throw new GuestException($"source vCPU {id}: pass {r.Pass} found {r.Mismatches} mismatching qwords");
            Interlocked.Exchange(ref g._passesDone[id], (long)r.Pass + 1);
            return VcpuLoopAction.Continue;
        }

        public void OnThreadStop(VcpuLoop loop)
        {
            if (_armedSince != 0) Interlocked.Decrement(ref g._armedTimers);
            _timer?.Dispose();
        }
    }

    private static VcpuStopCause StopCause(long kicks, long selfKicks) => (kicks, selfKicks) switch
    {
        ( > 0, > 0) => VcpuStopCause.Both,
        ( > 0, _) => VcpuStopCause.Kick,
        (_, > 0) => VcpuStopCause.SelfKick,
        _ => VcpuStopCause.Exit,
    };

    private void Capture(Vcpu vcpu, int id)
    {
        _captured[id] = new VcpuState
        {
            Id = id, Regs = vcpu.GetRegs(), Sregs = vcpu.GetSregs(), Events = vcpu.GetEvents(),
            AsyncPf = _asyncPf?.Export(id), TaskKernel = _tasks?.Capture(id), Sdei = (_asyncPf as ArmAsyncPfRegisters)?.ExportSdei(id),
        };
    }

    /// <summary>Ends the vCPU threads (parked or running) and joins them. The guest does not run again.</summary>
    public void Stop()
    {
        _stop = true;
        foreach (var v in _m.Vcpus) v.Kick();
        _release.Set();
        foreach (var t in _threads) t?.Join();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Stop();
        _parked.Dispose();
        _release.Dispose();
    }
}
