using System.Diagnostics;
using Faultline.Kvm;

namespace Faultline.Guest.Probe;

/// <summary>
/// Runs one probe experiment on a vCPU's own named thread, and stops it: kicks until the thread is out of KVM_RUN,
/// then, if it still hangs (a vCPU blocked in a userfaultfd wait is not interrupted by a signal at CPL0, HOST.md), an
/// unblock action (closing the userfaultfd wakes its waiters). A thread that cannot be joined is reported, and the
/// caller must then not unmap anything that thread may still touch.
/// </summary>
internal sealed class ProbeVcpuThread<T>
{
    private readonly Vcpu _vcpu;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _bound = new();
    private T? _result;
    private Exception? _error;
    private int _stopRequested;

    public ProbeVcpuThread(Vcpu vcpu, string name, Func<Vcpu, Func<bool>, T> body)
    {
        _vcpu = vcpu;
        _thread = new Thread(() =>
        {
            try
            {
                vcpu.BindToCurrentThread();
                _bound.Set();
                _result = body(vcpu, () => Volatile.Read(ref _stopRequested) != 0);
            }
            catch (Exception e) { _error = e; }
            finally
            {
                vcpu.UnbindThread();
                _bound.Set();
            }
        }) { Name = name, IsBackground = true };
    }

    /// <summary>Starts the thread and returns once it is bound to the vCPU (kicks from now on reach it).</summary>
    public void Start()
    {
        _thread.Start();
        _bound.Wait();
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the body to finish on its own.</summary>
    public bool Wait(TimeSpan timeout) => _thread.Join(timeout);

    /// <summary>Asks the body to stop, kicking the vCPU until the thread ends; false if it could not be joined.</summary>
    public bool Stop(TimeSpan timeout, Action? unblock = null)
    {
        Volatile.Write(ref _stopRequested, 1);
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            _vcpu.Kick();
            if (_thread.Join(50)) return true;   // a kick can wait for a host tick (HZ=250): retry, don't give up
        }
        if (unblock is null) return false;
        unblock();
        for (var i = 0; i < 20; i++)
        {
            _vcpu.Kick();
            if (_thread.Join(100)) return true;
        }
        return false;
    }

    /// <summary>The body's result; rethrows what the body threw.</summary>
    public T Result
    {
        get
        {
            if (_thread.IsAlive) throw new InvalidOperationException("probe thread still running");
            if (_error is not null) throw _error is FaultlineException ? _error : new GuestException($"probe vCPU thread failed: {_error.Message}");
            return _result!;
        }
    }
}
