using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Migration.Transport;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Migration.Destination;

/// <summary>
/// Pages from the migration source: the destination engine's page source.
/// <para>Request (a fault path: vCPU or uffd reader thread, the page marked requested in the tracker): queues the page
/// and returns; the thread that finds nobody sending sends one Demand frame with every page queued by then (so faults
/// that happen together cost one frame), and the fault path waits on the tracker.</para>
/// <para>Receive (<see cref="OnPage"/>, <see cref="OnPageRun"/>, the receiver threads, never blocking): each page's first
/// copy's CRC goes into the image digest and the page is installed through the engine's sink straight from the frame buffer (one
/// ioctl per contiguous part), which wakes the fault path waiting for it; later copies are dropped.</para>
/// <para>What outlives a connection (<see cref="Attach"/> / <see cref="Detach"/>): which pages have arrived, which are
/// requested and not yet here (the tracker), and the counters; a new urgent channel gets every request still in
/// flight again.</para>
/// </summary>
internal sealed class RemotePageSource : IPageSource, IDisposable
{
    private static readonly byte[] ZeroPage = new byte[Wire.PageSize];
    private const int QueueSlots = 64;

    private readonly GuestRegion _ram;
    private readonly PageDigest _digest;
    private readonly byte[] _arrivedOnce;
    private readonly long[] _requestedAt;          // per page: Stopwatch timestamp of its demand (0 = never demanded)
    private readonly long[] _queue = new long[QueueSlots];   // page index + 1, 0 = free
    private readonly byte[] _demandFrame = GC.AllocateUninitializedArray<byte>(Wire.MaxDemandIndices * 8, pinned: true);
    private int _sending;
    private IPageSink? _sink;
    private volatile PeerConnection? _urgent;
    private long _expectedLatencyTicks;
    private long _receivedCount, _demandPages, _pushedPages, _zeroPages, _duplicates, _installedByReceiver, _answeredRequests;
    private long _demandFrames, _demandedPages, _runFrames, _runAnswered;

    public ulong Pages { get; }
    /// <summary>Per demanded page: from its demand to its install (every engine; the vCPU or reader waits meanwhile).</summary>
    public LatencyRecorder DemandLatency { get; }
    /// <summary>Per vCPU range: nanoseconds its demanded pages were waited for (reader engines: the vCPU is blocked in the kernel meanwhile).</summary>
    public long[] DemandNsByRange { get; }
    private readonly ulong _bytesPerVcpu;
    private readonly long[] _answeredAt;           // per vCPU share of RAM: when a requested page of it was last installed (LastAnsweredAt)
    private readonly ManualResetEventSlim _allReceived = new(false);

    public RemotePageSource(GuestRegion ram, PageDigest digest, int vcpus)
    {
        _ram = ram;
        _digest = digest;
        Pages = ram.PageCount;
        _arrivedOnce = new byte[Pages];
        _requestedAt = new long[Pages];
        DemandLatency = new LatencyRecorder((int)Math.Min(Pages + 1024, 4_000_000));
        DemandNsByRange = new long[vcpus];
        _answeredAt = new long[vcpus];
        _bytesPerVcpu = ram.Size / (ulong)vcpus;
    }

    public void Start(IPageSink sink) => _sink = sink;
    public bool CompletesOnRequest => false;

    /// <summary>
    /// How long a demand takes to be answered (fault paths size their spin from it): the link's round trip, measured
    /// before the pause, until demands are answered; then a moving average of what the last demands took (request →
    /// installed). Under a running push a demand takes several idle round trips (measured: p50 ~110 µs against a 20 µs
    /// round trip), and a fault path that stops spinning before its page lands pays a wake-up behind the busy threads.
    /// </summary>
    public TimeSpan ExpectedLatency
    {
        get => Stopwatch.GetElapsedTime(0, Math.Max(Interlocked.Read(ref _expectedLatencyTicks), Interlocked.Read(ref _observedTicks)));
        set => Interlocked.Exchange(ref _expectedLatencyTicks, (long)(value.TotalSeconds * Stopwatch.Frequency));
    }

    private long _observedTicks;

    public WaitHandle AllReceived => _allReceived.WaitHandle;
    public bool IsAllReceived => _allReceived.IsSet;
    public long ReceivedCount => Interlocked.Read(ref _receivedCount);
    public long DemandPages => Interlocked.Read(ref _demandPages);
    public long PushedPages => Interlocked.Read(ref _pushedPages);
    public long ZeroPages => Interlocked.Read(ref _zeroPages);
    public long Duplicates => Interlocked.Read(ref _duplicates);
    public long InstalledByReceiver => Interlocked.Read(ref _installedByReceiver);
    /// <summary>First copies that arrived for a page a fault path had requested (whichever channel brought them).</summary>
    public long AnsweredRequests => Interlocked.Read(ref _answeredRequests);
    /// <summary>Demand frames sent, and the pages they asked for (a frame carries every page queued when it leaves).</summary>
    public long DemandFrames => Interlocked.Read(ref _demandFrames);
    public long DemandedPages => Interlocked.Read(ref _demandedPages);
    public long RunFrames => Interlocked.Read(ref _runFrames);
    /// <summary>Requested pages whose first copy came in a push run (the push/demand race on the run path).</summary>
    public long RunAnsweredRequests => Interlocked.Read(ref _runAnswered);

    public string Describe() => $"remote source over {_urgent?.Peer ?? "(no connection)"}";

    // ---- connection -----------------------------------------------------------------------------------------

    /// <summary>Demands go out on <paramref name="urgent"/> from now on; requests still in flight are sent on it again (returns how many).</summary>
    public long Attach(PeerConnection urgent)
    {
        _urgent = urgent;
        for (var i = 0; i < QueueSlots; i++) Interlocked.Exchange(ref _queue[i], 0);   // re-queued from the tracker below
        var tracker = _sink!.Tracker;
        long n = 0;
        for (ulong i = 0; i < Pages; i++)
            if (tracker.StateOf(i) == PageTracker.Requested && Volatile.Read(ref _arrivedOnce[i]) == 0) { Enqueue(i); n++; }
        SendQueued();
        return n;
    }

    /// <summary>Whether page <paramref name="index"/>'s first copy has arrived (the received-page bitmap a rejoin sends).</summary>
    public bool HasArrived(ulong index) => Volatile.Read(ref _arrivedOnce[index]) != 0;

    /// <summary>Counts pages asked for again after a rejoin (they were in flight on the lost connection).</summary>
    public void CountRerequested(long pages) => Interlocked.Add(ref _rerequested, pages);

    // ---- damaged pages ----------------------------------------------------------------------------------------

    /// <summary>The most damaged page frames one migration survives; past it the link is not fit to carry a guest.</summary>
    public const int MaxDamagedFrames = 64;
    private long _damagedFrames, _rerequested;
    private volatile bool _pushDone;

    /// <summary>Page frames that failed their checksum and were dropped (each answered by asking again).</summary>
    public long DamagedFrames => Interlocked.Read(ref _damagedFrames);
    /// <summary>Pages demanded again because a frame carrying them (or perhaps them) was damaged.</summary>
    public long PagesRerequested => Interlocked.Read(ref _rerequested);

    /// <summary>
    /// A page frame failed its checksum (<paramref name="what"/> says which): it is dropped, its index unknown (the
    /// checksum covered it too). Every request still in flight is sent again (the lost frame may have answered one);
    /// once the push is done, every page still missing is demanded as well (it may have been a pushed page nobody
    /// asked for). Receiver threads only. Past <see cref="MaxDamagedFrames"/> the migration fails with <paramref name="what"/>.
    /// </summary>
    public void OnDamaged(string what)
    {
        if (Interlocked.Increment(ref _damagedFrames) > MaxDamagedFrames)
            throw new MigrationException($"{what} ({MaxDamagedFrames} damaged page frames already: giving up)");
        AskAgain(everyMissing: _pushDone);
    }

    /// <summary>The push has sent every page: if a frame was damaged on the way, the pages it may have carried are missing still: ask for each.</summary>
    public void OnPushDone()
    {
        _pushDone = true;
        if (DamagedFrames > 0) AskAgain(everyMissing: true);
    }

    private void AskAgain(bool everyMissing)
    {
        var tracker = _sink!.Tracker;
        long n = 0;
        for (ulong i = 0; i < Pages; i++)
        {
            if (Volatile.Read(ref _arrivedOnce[i]) != 0) continue;
            if (everyMissing || tracker.StateOf(i) == PageTracker.Requested) { Enqueue(i); n++; }
        }
        Interlocked.Add(ref _rerequested, n);
        SendQueued();
    }

    /// <summary>The connection is gone: requests queue (and wait) until <see cref="Attach"/>.</summary>
    public void Detach()
    {
        _urgent = null;
        // a sender still inside Send on the old channel finishes (it fails fast: the channel is shut down)
        var spin = new SpinWait();
        while (Volatile.Read(ref _sending) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    // ---- fault path -----------------------------------------------------------------------------------------

    public void Request(GuestAddress page)
    {
        var idx = (page.Value - _ram.Base.Value) >> GuestAddress.PageShift;
        Volatile.Write(ref _requestedAt[idx], Stopwatch.GetTimestamp());
        Enqueue(idx);
        SendQueued();
    }

    private void Enqueue(ulong idx)
    {
        var spin = new SpinWait();
        while (true)
        {
            for (var i = 0; i < QueueSlots; i++)
                if (Interlocked.CompareExchange(ref _queue[i], (long)idx + 1, 0) == 0) return;
            SendQueued();                     // the queue is full: send what is there, then try again
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>
    /// Sends every queued page in one Demand frame, unless another thread is sending (it takes what this thread queued:
    /// after it stops sending it looks at the queue once more). Allocation-free.
    /// </summary>
    private void SendQueued()
    {
        while (true)
        {
            if (Interlocked.CompareExchange(ref _sending, 1, 0) != 0) return;
            try
            {
                var urgent = _urgent;
                if (urgent is null) return;
                var n = 0;
                for (var i = 0; i < QueueSlots && n < Wire.MaxDemandIndices; i++)
                {
                    var v = Interlocked.Exchange(ref _queue[i], 0);
                    if (v == 0) continue;
                    BinaryPrimitives.WriteUInt64LittleEndian(_demandFrame.AsSpan(n * 8), (ulong)(v - 1));
                    n++;
                }
                if (n > 0)
                {
                    try { urgent.Send(FrameType.Demand, 0, _demandFrame.AsSpan(0, n * 8)); }
                    // the link broke: the receivers see it too, and the pages stay requested in the tracker (a rejoin asks again)
                    catch (LinkLostException) { return; }
                    catch (MigrationException e) { _sink!.Fail(e); return; }
                    Interlocked.Increment(ref _demandFrames);
                    Interlocked.Add(ref _demandedPages, n);
                }
            }
            finally { Volatile.Write(ref _sending, 0); }
            if (!AnyQueued()) return;
        }
    }

    private bool AnyQueued()
    {
        for (var i = 0; i < QueueSlots; i++) if (Volatile.Read(ref _queue[i]) != 0) return true;
        return false;
    }

    // ---- receive path ---------------------------------------------------------------------------------------

    /// <summary>A page (or a zero-page marker: <paramref name="bytes"/> empty) arrived. Receiver threads only; never waits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public void OnPage(ulong idx, ReadOnlySpan<byte> bytes, PageFlags flags)
    {
        if (idx >= Pages) throw new MigrationException($"source sent page {idx}, out of range (guest RAM has {Pages} pages)");
        if (Interlocked.CompareExchange(ref _arrivedOnce[idx], 1, 0) != 0) { Interlocked.Increment(ref _duplicates); return; }
        _digest.Record(idx, bytes);
        if (bytes.IsEmpty) { Interlocked.Increment(ref _zeroPages); bytes = ZeroPage; }
        Interlocked.Increment(ref (flags & PageFlags.Demand) != 0 ? ref _demandPages : ref _pushedPages);
        var requested = _sink!.Tracker.StateOf(idx) == PageTracker.Requested;
        if (_sink.Install(_ram.Base + (idx << GuestAddress.PageShift), bytes))
        {
            Interlocked.Increment(ref _installedByReceiver);
            if (requested) Answered(idx);
        }
        if (Interlocked.Increment(ref _receivedCount) == (long)Pages) _allReceived.Set();
    }

    /// <summary>
    /// A run of <paramref name="count"/> consecutive pages from <paramref name="first"/> arrived (push). Receiver
    /// threads only; never waits. The first copies' CRCs go into the image digest and the pages are installed through the sink (one
    /// ioctl per contiguous part nobody else owns); later copies are dropped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    /// <param name="crcs">The run's per-page CRC-32Cs as the frame carries them (checked by the reader); empty: computed here.</param>
    public void OnPageRun(ulong first, int count, ReadOnlySpan<byte> bytes, PageFlags flags, ReadOnlySpan<byte> crcs = default)
    {
        if (count is < 1 or > Wire.MaxRunPages || first >= Pages || (ulong)count > Pages - first)
            throw new MigrationException($"source sent pages {first}..{first + (ulong)Math.Max(count, 1) - 1}, out of range (guest RAM has {Pages} pages)");
        if (bytes.Length != count * Wire.PageSize) throw new MigrationException($"page run of {count} pages carries {bytes.Length} bytes");
        Span<bool> fresh = stackalloc bool[count];
        Span<bool> requested = stackalloc bool[count];
        Span<bool> installed = stackalloc bool[count];
        var tracker = _sink!.Tracker;
        var arrived = 0;
        var anyRequested = false;
        for (var i = 0; i < count; i++)
        {
            fresh[i] = Interlocked.CompareExchange(ref _arrivedOnce[first + (ulong)i], 1, 0) == 0;
            if (!fresh[i]) continue;
            arrived++;
            if (crcs.Length >= 4 * count) _digest.Record(first + (ulong)i, BinaryPrimitives.ReadUInt32LittleEndian(crcs[(4 * i)..]));
            else _digest.Record(first + (ulong)i, bytes.Slice(i * Wire.PageSize, Wire.PageSize));
            requested[i] = tracker.StateOf(first + (ulong)i) == PageTracker.Requested;
            anyRequested |= requested[i];
        }
        Interlocked.Add(ref _duplicates, count - arrived);
        Interlocked.Increment(ref _runFrames);
        if (arrived == 0) return;
        Interlocked.Add(ref (flags & PageFlags.Demand) != 0 ? ref _demandPages : ref _pushedPages, arrived);

        // each contiguous sub-run of first copies (all of the run, usually): installed with one ioctl per part of it nobody
        // else owns, straight from the frame buffer
        var installedNow = 0;
        for (var i = 0; i < count;)
        {
            if (!fresh[i]) { i++; continue; }
            var j = i + 1;
            while (j < count && fresh[j]) j++;
            var sub = bytes.Slice(i * Wire.PageSize, (j - i) * Wire.PageSize);
            installedNow += _sink.InstallRun(_ram.Base + ((first + (ulong)i) << GuestAddress.PageShift), j - i, sub, installed[i..j]);
            i = j;
        }
        Interlocked.Add(ref _installedByReceiver, installedNow);
        if (anyRequested)
            for (var i = 0; i < count; i++)
                if (requested[i] && installed[i])
                {
                    Answered(first + (ulong)i);
                    Interlocked.Increment(ref _runAnswered);
                }
        if (Interlocked.Add(ref _receivedCount, arrived) == (long)Pages) _allReceived.Set();
    }

    private void Answered(ulong idx)
    {
        Interlocked.Increment(ref _answeredRequests);
        var at = Volatile.Read(ref _requestedAt[idx]);
        if (at == 0) return;
        var now = Stopwatch.GetTimestamp();
        var range = (int)Math.Min((ulong)DemandNsByRange.Length - 1, (idx << 12) / _bytesPerVcpu);
        Volatile.Write(ref _answeredAt[range], now);
        var ticks = now - at;
        var ns = Clock.ToNanoseconds(ticks);
        DemandLatency.Record(ns);
        // moving average over about 8 demands (lossy under races: it only sizes a spin)
        var old = Volatile.Read(ref _observedTicks);
        Volatile.Write(ref _observedTicks, old == 0 ? ticks : old + (ticks - old) / 8);
        Interlocked.Add(ref DemandNsByRange[range], ns);
    }

    /// <summary>
    /// When a requested page of vCPU <paramref name="range"/>'s share of RAM (as <see cref="DemandNsByRange"/>) was last
    /// installed for its waiter (Stopwatch ticks, 0: never). The generation program's vCPU faults only in its own share,
    /// one fault at a time, so after its fault this is when the page that ended its wait landed.
    /// </summary>
    public long LastAnsweredAt(int range) => Volatile.Read(ref _answeredAt[range]);

    /// <summary>No more pages will come: every fault path waiting for one returns with <paramref name="e"/>.</summary>
    public void Fail(Exception e) => _sink?.Fail(e);

    public void Dispose() => _allReceived.Dispose();
}
