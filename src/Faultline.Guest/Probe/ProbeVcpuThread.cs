using System.Diagnostics;
using Faultline.Kvm;

namespace Faultline.Guest.Probe;

/// <summary>
/// Runs one probe experiment, a <see cref="VcpuLoop"/> with the experiment's hooks, on a vCPU's own named thread, and
/// stops it: kicks until the thread is out of KVM_RUN, then, if it still hangs (a vCPU blocked in a userfaultfd wait
/// is not interrupted by a signal at CPL0, HOST.md), an unblock action (closing the userfaultfd wakes its waiters). A
/// thread that cannot be joined is reported, and the caller must then not unmap anything that thread may still touch.
/// The thread's own hooks wrap the experiment's, to say when the vCPU is bound.
/// </summary>
internal sealed class ProbeVcpuThread<T> : IVcpuHooks
{
    private readonly IVcpuHooks _experiment;
    private readonly VcpuLoop _loop;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _bound = new();
    private T? _result;
    private Exception? _error;

    /// <param name="result">Runs on the vCPU thread once the loop has ended, with how it ended.</param>
    public ProbeVcpuThread(Vcpu vcpu, string name, IVcpuHooks experiment, IExitHandler? handler, Func<VcpuLoop, VcpuLoopEnd, T> result)
    {
        _experiment = experiment;
        _loop = new VcpuLoop(vcpu, this, handler);
        _thread = new Thread(() =>
        {
            try { _result = result(_loop, _loop.Run()); }
            catch (Exception e) { _error = e; }
            finally { _bound.Set(); }   // also when the thread failed before binding: Start must not wait forever
        }) { Name = name, IsBackground = true };
    }

    /// <summary>Starts the thread and returns once it is bound to the vCPU (kicks from now on reach it).</summary>
    public void Start()
    {
        _thread.Start();
        _bound.Wait();
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the experiment to finish on its own.</summary>
    public bool Wait(TimeSpan timeout) => _thread.Join(timeout);

    /// <summary>Asks the loop to stop, kicking the vCPU until the thread ends; false if it could not be joined.</summary>
    public bool Stop(TimeSpan timeout, Action? unblock = null)
    {
        _loop.RequestStop();
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            _loop.Vcpu.Kick();
            if (_thread.Join(50)) return true;   // a kick can wait for a host tick (HZ=250): retry, don't give up
        }
        if (unblock is null) return false;
        unblock();
        for (var i = 0; i < 20; i++)
        {
            _loop.Vcpu.Kick();
            if (_thread.Join(100)) return true;
        }
        return false;
    }

    /// <summary>The experiment's result; rethrows what the loop or the experiment threw.</summary>
    public T Result
    {
        get
        {
            if (_thread.IsAlive) throw new InvalidOperationException("probe thread still running");
            if (_error is not null) throw _error is FaultlineException ? _error : new GuestException($"probe vCPU thread failed: {_error.Message}");
            return _result!;
        }
    }

    public void OnThreadStart(VcpuLoop loop)
    {
        _experiment.OnThreadStart(loop);
        _bound.Set();
    }

    public VcpuLoopAction BeforeRun(VcpuLoop loop) => _experiment.BeforeRun(loop);
    public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call) => _experiment.OnGuestCall(loop, call);
    public void OnInjected(VcpuLoop loop, in VcpuEvent e) => _experiment.OnInjected(loop, e);
    public void OnThreadStop(VcpuLoop loop) => _experiment.OnThreadStop(loop);
}
