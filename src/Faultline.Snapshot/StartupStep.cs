using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Faultline.Snapshot;

/// <summary>
/// One step of a restore's start that runs on another of its threads (the VM's creation, the engine choice, the guest
/// image): its value or its error, and when it ended. The first completion counts; waiting blocks without spinning
/// (on this 2-core host a spinning waiter takes the CPU from the thread it waits for). No thread pool: the pool's first
/// use took up to 2.5 ms.
/// </summary>
internal sealed class StartupStep<T> : IDisposable
{
    private readonly ManualResetEventSlim _done = new(false, spinCount: 0);
    private T? _value;
    private ExceptionDispatchInfo? _error;
    private int _completed;

    /// <summary>When the step ended (Stopwatch ticks; 0: not yet).</summary>
    public long Timestamp { get; private set; }
    public bool IsCompleted => Volatile.Read(ref _completed) != 0 && _done.IsSet;
    /// <summary>Ended with a value (false: not ended, or failed).</summary>
    public bool Succeeded => IsCompleted && _error is null;

    /// <summary>Runs <paramref name="f"/> on the calling thread and completes with what it returns or throws.</summary>
    public void Run(Func<T> f)
    {
        T value;
        try { value = f(); }
        catch (Exception e)
        {
            Fail(e);
            return;
        }
        if (!TrySet(value) && value is IDisposable d) d.Dispose();   // completed already (failed): nobody takes it
    }

    public bool TrySet(T value) => Complete(value, null);
    public bool Fail(Exception e) => Complete(default, ExceptionDispatchInfo.Capture(e));

    private bool Complete(T? value, ExceptionDispatchInfo? error)
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0) return false;
        _value = value;
        _error = error;
        Timestamp = Stopwatch.GetTimestamp();
        _done.Set();
        return true;
    }

    /// <summary>Waits for the step and returns its value, or throws its error.</summary>
    public T Result
    {
        get
        {
            _done.Wait();
            _error?.Throw();
            return _value!;
        }
    }

    /// <summary>The value once the step has ended with one; otherwise default (does not wait).</summary>
    public T? ValueIfSucceeded => Succeeded ? _value : default;

    public void Dispose() => _done.Dispose();
}
