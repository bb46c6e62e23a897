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
    private volatile bool _pause, _stop;
    private volatile Exception? _error;
    private int _disposed;

    public SourceGuest(GuestMachine machine, int qwordsPerPage, ulong writeBytesPerVcpu)
    {
        _m = machine;
        _qwordsPerPage = qwordsPerPage;
        _writeBytesPerVcpu = writeBytesPerVcpu;
        var n = machine.Vcpus.Count;
        _threads = new Thread[n];
        _passesDone = new long[n];
        _current = new WorkloadProgress[n];
        _captured = new VcpuState?[n];
        _parkedFlags = new bool[n];
        _parked = new CountdownEvent(n);
    }

    public Exception? Error => _error;

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

    /// <summary>Stops every vCPU (kick, no re-entry) and returns their state, captured on their own threads.</summary>
    public VcpuState[] Pause(TimeSpan timeout)
    {
        _pause = true;
        foreach (var v in _m.Vcpus) v.Kick();
        if (!_parked.Wait(timeout)) throw new GuestException($"source vCPUs did not stop within {timeout.TotalMilliseconds:0} ms");
        if (_error is { } e) throw e as FaultlineException ?? new GuestException($"source guest failed: {e.Message}");
        return _captured.Select(c => c!).ToArray();
    }

    private void Loop(int id)
    {
        var vcpu = _m.Vcpus[id];
        var parkedSignalled = false;
        try
        {
            vcpu.BindToCurrentThread();
            Capture(vcpu, id);      // warm-up: the pause path is JIT-compiled now, not inside the downtime
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
                    if (_pause) { Capture(vcpu, id); _parkedFlags[id] = true; _parked.Signal(); parkedSignalled = true; _release.Wait(); return; }
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
            vcpu.UnbindThread();
        }
    }

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
