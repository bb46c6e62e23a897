namespace Faultline.Guest;

/// <summary>
/// demand_paging_test's start: each vCPU thread says it is ready and spins (yielding, never sleeping) until the
/// main thread, having seen all of them ready, says go. A blocking barrier would put thread wake-ups (up to
/// milliseconds on this nested host) inside the measured interval.
/// </summary>
internal sealed class StartLine(int threads)
{
    private int _ready;
    private volatile bool _go;

    public void Ready() => Interlocked.Increment(ref _ready);

    public void ReadyAndSpin()
    {
        Ready();
        var spin = new SpinWait();
        while (!_go) spin.SpinOnce(sleep1Threshold: -1);
    }

    public void WaitAllReadyThenGo()
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _ready) < threads) spin.SpinOnce(sleep1Threshold: -1);
        _go = true;
    }
}
