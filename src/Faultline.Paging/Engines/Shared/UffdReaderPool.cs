using Faultline.Kvm.Uffd;

namespace Faultline.Paging.Engines.Shared;

/// <summary>What a reader thread does with each userfaultfd message, and between messages.</summary>
internal interface IUffdFaultHandler
{
    void OnFault(in UffdFault fault, FaultCounters counters);
    /// <summary>Called at least every <see cref="UffdReaderPool.IdleMs"/> when the pool was started with a poll timeout.</summary>
    void OnIdle(FaultCounters counters) { }
}

/// <summary>
/// Reader threads (<c>fl-uffdN</c>) over a set of userfaultfds: each polls its userfaultfd next to a stop event (the
/// selftests' pipe), reads one message per wake-up (as refpaging and the selftests do: draining until EAGAIN costs a
/// read syscall per fault on a 2-core host where the reader competes with the vCPU it just woke) and hands it to the
/// handler. R readers are spread over the userfaultfds. Disposing stops and joins them.
/// </summary>
internal sealed class UffdReaderPool : IDisposable
{
    public const int IdleMs = 5;
    private readonly List<Thread> _threads = [];
    private readonly List<FaultCounters> _counters = [];
    private readonly StopEvent _stop = new();
    private int _disposed;

    public IReadOnlyList<FaultCounters> Counters => _counters;
    public int Count => _threads.Count;

    /// <param name="pollIdle">Wake every <see cref="IdleMs"/> to call <see cref="IUffdFaultHandler.OnIdle"/>.</param>
    public void Start(UffdSet uffds, int readers, IUffdFaultHandler handler, bool pollIdle)
    {
        var perUffd = uffds.Count == 1 ? readers : Math.Max(1, readers / uffds.Count);
        foreach (var uffd in uffds.All)
            for (var r = 0; r < perUffd; r++)
            {
                var c = new FaultCounters();
                _counters.Add(c);
                var u = uffd;
                var t = new Thread(() => Loop(u, handler, c, pollIdle ? IdleMs : -1)) { Name = $"fl-uffd{_threads.Count}", IsBackground = true };
                _threads.Add(t);
                t.Start();
            }
    }

    private void Loop(Userfaultfd uffd, IUffdFaultHandler handler, FaultCounters c, int timeoutMs)
    {
        c.BeginThread();
        try
        {
            while (true)
            {
                var ready = uffd.WaitReadable(_stop, timeoutMs);
                if (_stop.IsSet) break;
                if (timeoutMs >= 0) handler.OnIdle(c);
                if (!ready) continue;
                if (!uffd.TryReadFault(out var f)) { c.ReaderEmptyWakeups++; continue; }   // another reader of this userfaultfd took it
                c.ReaderFaults++;
                handler.OnFault(f, c);
            }
        }
        catch (Exception) when (_stop.IsSet)
        {
            // teardown closed things under us
        }
        catch (PageUnavailableException)
        {
            // the source failed: the vCPUs see it on their own threads; this reader has nothing left to do
        }
        finally
        {
            c.EndThread();
            PageBuffer.Release();
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Set();
        foreach (var t in _threads) t.Join();
        _stop.Dispose();
    }
}
