using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Migration.Guest;
using Faultline.Migration.Protocol;

namespace Faultline.Migration.Source;

/// <summary>
/// The source's running guest: one thread per vCPU looping generation passes (<see cref="Generations"/>) until
/// <see cref="Pause"/> kicks them out of KVM_RUN. Each vCPU thread then captures its own state (no vCPU ioctl
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
    private readonly WorkloadProgress[] _current;
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
    public SourceGuest(GuestMachine machine, int qwordsPerPage, ulong writeBytesPerVcpu, TimeSpan selfKickPeriod)
    {
        _m = machine;
        _qwordsPerPage = qwordsPerPage;
        _writeBytesPerVcpu = writeBytesPerVcpu;
        _selfKickPeriod = selfKickPeriod > TimeSpan.Zero ? selfKickPeriod : TimeSpan.Zero;
        var n = machine.Vcpus.Count;
        _threads = new Thread[n];
        _passesDone = new long[n];
        _current = new WorkloadProgress[n];
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
            for (var i = 0; i < _passesDone.Length; i++) min = Math.Min(min, Interlocked.Read(ref _passesDone[i]));
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
        var vcpu = _m.Vcpus[id];
        var parkedSignalled = false;
        SelfKickTimer? timer = null;
        long armedSince = 0;
        try
        {
            vcpu.BindToCurrentThread();
            if (_selfKickPeriod > TimeSpan.Zero) timer = SelfKickTimer.CreateForCurrentThread(vcpu);
            Capture(vcpu, id);      // warm-up: the pause path is JIT-compiled now, not inside the downtime
            long kicks = vcpu.KicksDelivered, selfKicks = vcpu.SelfKicksDelivered;   // before the last KVM_RUN
            var (start, _) = _m.RangeOf(id);
            var end = start.Value + _writeBytesPerVcpu;
            for (ulong pass = 0; ; pass++)
            {
                var p = Generations.Pass(pass, start.Value, end, _qwordsPerPage);
                _m.Image.Boot(vcpu, p.Workload, Generations.ArgsOf(p), PrivilegeLevel.User);
                _current[id] = p;
                while (true)
                {
                    if (_stop) return;
                    if (_pause)
                    {
                        _stopTs[id] = Stopwatch.GetTimestamp();
                        _stopCause[id] = StopCause(vcpu.KicksDelivered - kicks, vcpu.SelfKicksDelivered - selfKicks);
                        if (armedSince != 0) { _armedTicks[id] += _stopTs[id] - armedSince; armedSince = 0; Interlocked.Decrement(ref _armedTimers); }
                        _selfKicks[id] = vcpu.SelfKicksDelivered;
                        Capture(vcpu, id);
                        _parkedTs[id] = Stopwatch.GetTimestamp();
                        _parkedFlags[id] = true;
                        if (Interlocked.Decrement(ref _running) == 0) _onAllParked?.Invoke(CapturedStates());
                        _parked.Signal();
                        parkedSignalled = true;
                        timer?.Dispose();   // after the downtime's signal: timer_delete is not on the pause path
                        _release.Wait();
                        return;
                    }
                    if (timer is not null && timer.IsArmed != _pauseImminent)
                    {
                        // armed here, on this thread: the timer's hrtimer is queued on the CPU this vCPU runs on
                        if (_pauseImminent)
                        {
                            timer.Arm(_selfKickPeriod);
                            armedSince = Stopwatch.GetTimestamp();
                            Interlocked.Increment(ref _armedTimers);
                        }
                        else
                        {
                            timer.Disarm();
                            _armedTicks[id] += Stopwatch.GetTimestamp() - armedSince;
                            armedSince = 0;
                            Interlocked.Decrement(ref _armedTimers);
                        }
                    }
                    kicks = vcpu.KicksDelivered;
                    selfKicks = vcpu.SelfKicksDelivered;
                    var exit = vcpu.Run();
                    if (GuestCall.TryDecode(exit, out var call))
                    {
                        if (call.Op == GuestOp.Done)
                        {
                            if (call.Value != 0 && p.Workload == Workload.VerifyThenWrite)
                                throw new GuestException($"source vCPU {id}: pass {pass} found {call.Value} mismatching qwords");
                            Interlocked.Increment(ref _passesDone[id]);
                            break;
                        }
                        if (call.Op == GuestOp.Report) continue;
                        throw new GuestException($"source vCPU {id}: guest call {call.Op} 0x{call.Value:x}");
                    }
                    if (exit.Kind == VcpuExitKind.Interrupted) continue;
                    throw GuestMachine.Unexpected(vcpu, exit);
                }
            }
        }
        catch (Exception e)
        {
            _error ??= e;
            if (!parkedSignalled) try { _parked.Signal(); } catch (InvalidOperationException) { }
        }
        finally
        {
            if (armedSince != 0) Interlocked.Decrement(ref _armedTimers);
            timer?.Dispose();
            vcpu.UnbindThread();
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
            Id = id, Regs = vcpu.GetRegs(), Sregs = vcpu.GetSregs(), Events = vcpu.GetEvents(), Workload = _current[id],
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
