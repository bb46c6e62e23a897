namespace Faultline.Migration;

/// <summary>The first error of any thread of a migration end; later ones are consequences (a shut-down socket) and are dropped.</summary>
internal sealed class FirstFailure : IDisposable
{
    private readonly ManualResetEventSlim _set = new(false);
    private Exception? _first;

    public Exception? Error => Volatile.Read(ref _first);
    public WaitHandle WaitHandle => _set.WaitHandle;
    public bool IsSet => _set.IsSet;

    /// <summary>Records <paramref name="e"/> if it is the first; returns true then.</summary>
    public bool Set(Exception e)
    {
        if (Interlocked.CompareExchange(ref _first, e, null) != null) return false;
        _set.Set();
        return true;
    }

    public void ThrowIfSet()
    {
        if (Error is { } e) throw e;
    }

    public void Dispose() => _set.Dispose();
}
