namespace Faultline.Migration;

/// <summary>
/// A thread created ahead of the work it will run: on this host creating and starting a thread costs 2–10 ms (fresh
/// stack pages, each first touch a hypervisor exit; measured between the destination's layout check and its Ready),
/// too much to pay inside the migration's setup. <see cref="Start"/> hands it its work; <see cref="Dispose"/> joins it,
/// releasing it first if it never got any.
/// </summary>
internal sealed class StandbyThread : IDisposable
{
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _go = new(false);
    private Action? _work;
    private int _disposed;

    public StandbyThread(string name)
    {
        _thread = new Thread(() =>
        {
            _go.Wait();
            Volatile.Read(ref _work)?.Invoke();
        }) { Name = name, IsBackground = true };
        _thread.Start();
    }

    public string Name => _thread.Name!;

    /// <summary>Runs <paramref name="work"/> on this thread (once).</summary>
    public void Start(Action work)
    {
        if (Interlocked.CompareExchange(ref _work, work, null) is not null) throw new InvalidOperationException($"{Name} already has its work");
        _go.Set();
    }

    /// <summary>Waits for the work to finish; a thread that never got work ends without running any.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _go.Set();
        _thread.Join();
        _go.Dispose();
    }
}
