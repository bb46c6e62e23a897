using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// The guest a snapshot is taken of: one thread per vCPU runs the generation program (all its state in registers) over
/// the first <c>usedBytesPerVcpu</c> of its range until every vCPU has finished the asked number of passes; then
/// <see cref="Pause"/> kicks them out of KVM_RUN, and each captures its own state on its own thread (no vCPU ioctl from
/// a foreign thread while KVM_RUN runs) and ends. The guest never runs again in this process.
/// </summary>
internal sealed class SaveGuest : IDisposable
{
    private readonly GuestMachine _m;
    private readonly WorkloadArgs[] _args;
    private readonly Thread[] _threads;
    private readonly long[] _passes;
    private readonly VcpuState?[] _captured;
    private readonly CountdownEvent _parked;
    private volatile bool _pause;
    private volatile Exception? _error;

    public SaveGuest(GuestMachine m, AccessOrder order, int qwordsPerPage, ulong usedBytesPerVcpu)
    {
        _m = m;
        var n = m.Vcpus.Count;
        _args = new WorkloadArgs[n];
        for (var i = 0; i < n; i++)
        {
            var (start, _) = m.RangeOf(i);
            _args[i] = new WorkloadArgs(start.Value, start.Value + usedBytesPerVcpu, 0, qwordsPerPage, order, OrderSeed: (ulong)i * 7919 + 1);
        }
        _threads = new Thread[n];
        _passes = new long[n];
        _captured = new VcpuState?[n];
        _parked = new CountdownEvent(n);
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

    /// <summary>Waits until every vCPU has finished <paramref name="passes"/> whole passes (0: returns at once).</summary>
    public void WaitForPasses(long passes, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (_error is { } e) throw Wrap(e);
            var min = long.MaxValue;
            foreach (ref var p in _passes.AsSpan()) min = Math.Min(min, Interlocked.Read(ref p));
            if (min >= passes) return;
            if (sw.Elapsed > timeout) throw new GuestException($"the guest did not finish {passes} pass(es) within {timeout.TotalSeconds:0} s");
            Thread.Sleep(1);
        }
    }

    /// <summary>Stops every vCPU and returns their state, captured on their own threads.</summary>
    public VcpuState[] Pause(TimeSpan timeout)
    {
        _pause = true;
        foreach (var v in _m.Vcpus) v.Kick();
        if (!_parked.Wait(timeout)) throw new GuestException($"the vCPUs did not stop within {timeout.TotalMilliseconds:0} ms");
        if (_error is { } e) throw Wrap(e);
        foreach (var t in _threads) t.Join();
        return _captured.Select(s => s!).ToArray();
    }

    private static FaultlineException Wrap(Exception e) => e as FaultlineException ?? new GuestException($"the guest failed: {e.Message}");

    private void Loop(int id)
    {
        var hooks = new Hooks(this, id);
        try { new VcpuLoop(_m.Vcpus[id], hooks).Run(); }
        catch (Exception e) { _error ??= e; }
        finally { if (!hooks.Parked) _parked.Signal(); }
    }

    private sealed class Hooks(SaveGuest g, int id) : IVcpuHooks
    {
        public bool Parked { get; private set; }

        public void OnThreadStart(VcpuLoop loop) => g._m.Image.Boot(loop.Vcpu, Workload.Generations, g._args[id], PrivilegeLevel.User);

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (!g._pause) return VcpuLoopAction.Continue;
            var v = loop.Vcpu;
            g._captured[id] = new VcpuState { Id = id, Regs = v.GetRegs(), Sregs = v.GetSregs(), Events = v.GetEvents() };
            Parked = true;
            g._parked.Signal();
            return VcpuLoopAction.Finish;
        }

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (call.Op != GuestOp.Report) throw new GuestException($"vCPU {id}: the generation program ended ({call.Op} 0x{call.Value:x})");
            var r = GenerationReport.Decode(call.Value);
            if (r.Mismatches != 0) throw new GuestException($"vCPU {id}: pass {r.Pass} found {r.Mismatches} mismatching qwords before the snapshot");
            Interlocked.Exchange(ref g._passes[id], (long)r.Pass + 1);
            return VcpuLoopAction.Continue;
        }
    }

    public void Dispose()
    {
        _pause = true;
        foreach (var v in _m.Vcpus) v.Kick();
        foreach (var t in _threads)
            while (t is not null && !t.Join(100)) foreach (var v in _m.Vcpus) v.Kick();
        _parked.Dispose();
    }
}
