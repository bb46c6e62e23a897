using System.Buffers;
using System.Diagnostics;
using Faultline.Kvm.Io;

namespace Faultline.Migration.Transport;

/// <summary>
/// A link delay emulated in user space (this kernel has no netem, HOST.md): every Send is stamped with
/// now + delay and queued; a dedicated thread releases each when its due time passes, spinning for microsecond
/// precision (no Thread.Sleep for 30 µs), and writes it to the inner channel in order. Bandwidth is not reduced:
/// the line holds as many sends as are in flight, like a real link's propagation delay. Receive passes through,
/// so with both ends wrapped, each direction is delayed once.
/// </summary>
public sealed class DelayLineChannel : IByteChannel
{
    private const long MaxQueuedBytes = 32L << 20;
    private readonly IByteChannel _inner;
    private readonly long _delayTicks;
    private readonly Queue<(byte[] Buf, int Len, long Due)> _queue = new();
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _items = new(0);
    private readonly Thread _thread;
    private long _queuedBytes;
    private volatile bool _stop;
    private volatile Exception? _error;
    private int _disposed;
    private readonly bool _demandPath;

    public TimeSpan Delay { get; }
    public string Peer => _inner.Peer;
    public long BytesSent => _inner.BytesSent;
    public long BytesReceived => _inner.BytesReceived;
    public TlsChannel? Tls => _inner.Tls;
    public TimeSpan? ReceiveTimeout { get => _inner.ReceiveTimeout; set => _inner.ReceiveTimeout = value; }

    /// <param name="demandPath">The pump carries the urgent channel's demands and replies: it joins the demand path
    /// (<see cref="ThreadPriority.JoinDemandPath"/>), since on a real link they would not wait for a CPU behind the
    /// bulk transfer either. It blocks between frames and spins at most the delay for each.</param>
    public DelayLineChannel(IByteChannel inner, TimeSpan delay, bool demandPath = false)
    {
        _inner = inner;
        Delay = delay;
        _delayTicks = (long)(delay.TotalSeconds * Stopwatch.Frequency);
        _demandPath = demandPath;
        _thread = new Thread(Pump) { Name = "fl-mig-delay", IsBackground = true };
        _thread.Start();
    }

    public void Send(ReadOnlySpan<byte> data)
    {
        ThrowIfFailed();
        var buf = ArrayPool<byte>.Shared.Rent(data.Length);
        data.CopyTo(buf);
        Enqueue(buf, data.Length);
    }

    /// <summary>The line queues a copy anyway: the segments are copied straight into it.</summary>
    public void SendGather(IoVecList data)
    {
        ThrowIfFailed();
        var length = checked((int)data.Length);
        var buf = ArrayPool<byte>.Shared.Rent(length);
        data.CopyTo(buf);
        data.Clear();
        Enqueue(buf, length);
    }

    private void ThrowIfFailed()
    {
        if (_error is { } e) throw e as MigrationException ?? new LinkLostException($"link to {Peer} failed: {e.Message}");
    }

    private void Enqueue(byte[] buf, int length)
    {
        var spin = new SpinWait();
        while (Interlocked.Read(ref _queuedBytes) > MaxQueuedBytes && !_stop) spin.SpinOnce(sleep1Threshold: -1);
        lock (_lock)
        {
            _queue.Enqueue((buf, length, Stopwatch.GetTimestamp() + _delayTicks));
            Interlocked.Add(ref _queuedBytes, length);
        }
        _items.Release();
    }

    private void Pump()
    {
        if (_demandPath) ThreadPriority.JoinDemandPath();
        try
        {
            while (true)
            {
                _items.Wait();
                if (_stop) return;
                (byte[] Buf, int Len, long Due) item;
                lock (_lock) item = _queue.Dequeue();
                while (Stopwatch.GetTimestamp() < item.Due) Thread.SpinWait(10);   // µs precision: spin, never sleep
                _inner.Send(item.Buf.AsSpan(0, item.Len));
                Interlocked.Add(ref _queuedBytes, -item.Len);
                ArrayPool<byte>.Shared.Return(item.Buf);
            }
        }
        catch (Exception e)
        {
            _error = e;
            Interlocked.Exchange(ref _queuedBytes, 0);
        }
        finally
        {
            if (_demandPath) ThreadPriority.LeaveDemandPath();
        }
    }

    public int Receive(Span<byte> buffer) => _inner.Receive(buffer);

    /// <summary>Waits until everything queued so far has been written (or the line failed).</summary>
    public void Flush()
    {
        var spin = new SpinWait();
        while (Interlocked.Read(ref _queuedBytes) > 0 && _error is null && !_stop) spin.SpinOnce(sleep1Threshold: -1);
    }

    public void Shutdown()
    {
        _stop = true;
        _items.Release();
        _inner.Shutdown();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Shutdown();
        _thread.Join();
        _inner.Dispose();
        _items.Dispose();
    }
}
