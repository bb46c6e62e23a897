using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Diagnostics;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Migration.Transport;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Migration.Destination;

/// <summary>
/// Pages from the source, for the paging engine and for the receiver threads.
/// <para>Fault path (<see cref="ReadPage"/>, vCPU or uffd reader thread, the page already claimed in the engine's
/// tracker): takes the page if it arrived meanwhile, else registers as its waiter, sends a demand request on the
/// urgent channel, and waits for whichever frame brings it first, demand reply or push.</para>
/// <para>Receive path (<see cref="OnPage"/>, the two receiver threads, never blocking): the first copy of each
/// page is folded into the received image, then installed with the engine's TryInstall; if a fault path owns the
/// page, the bytes go to its waiter, or are kept until it asks (it claimed the page but hasn't asked yet).
/// Later copies are dropped.</para>
/// </summary>
internal sealed class RemotePageSource : IPageSource, IDisposable
{
    private static readonly byte[] ZeroPage = new byte[Wire.PageSize];
    [ThreadStatic] private static Waiter? t_waiter;
    /// <summary>The page this thread last fetched (for <see cref="DemandTrace"/> hops taken around the fetch).</summary>
    [ThreadStatic] internal static ulong t_lastFetched;

    private readonly GuestRegion _ram;
    private readonly ReceivedImage _received;
    private readonly byte[] _arrivedOnce;
    private readonly Lock _gate = new();
    private readonly Dictionary<ulong, Waiter> _waiting = [];
    private readonly Dictionary<ulong, byte[]> _early = [];
    private readonly TimeSpan _pageTimeout;
    private IPagingEngine? _engine;
    private PeerConnection? _urgent;
    private volatile Exception? _failed;
    private long _receivedCount, _demandPages, _pushedPages, _zeroPages, _duplicates, _installedByReceiver, _handedToWaiters, _early_count;
    private long _demandsSent, _alreadyArrived, _runFrames, _runPagesToFaultPath;

    public ulong Pages { get; }
    /// <summary>Per fault-path ReadPage: from the request to the bytes in hand (reader engines' fault latency).</summary>
    public LatencyRecorder Fetches { get; }
    /// <summary>Per vCPU, nanoseconds uffd readers spent fetching pages of that vCPU's range (reader engines: the vCPU is blocked in the kernel meanwhile).</summary>
    public long[] FetchNsByRange { get; }
    private readonly ulong _bytesPerVcpu;
    private readonly ManualResetEventSlim _allReceived = new(false);

    public RemotePageSource(GuestRegion ram, ReceivedImage receivedImage, int vcpus, TimeSpan pageTimeout)
    {
        _ram = ram;
        _received = receivedImage;
        Pages = ram.PageCount;
        _arrivedOnce = new byte[Pages];
        _pageTimeout = pageTimeout;
        Fetches = new LatencyRecorder((int)Math.Min(Pages + 1024, 4_000_000));
        FetchNsByRange = new long[vcpus];
        _bytesPerVcpu = ram.Size / (ulong)vcpus;
    }

    public void Attach(IPagingEngine engine, PeerConnection urgent) { _engine = engine; _urgent = urgent; }

    /// <summary>The spin before a fault path blocks for its page, µs, unless the link's round trip says otherwise (<see cref="SpinForRoundTrip"/>).</summary>
    public const double DefaultWaitSpinUs = 20, MaxWaitSpinUs = 100;
    private static readonly double? SpinOverrideUs =
        double.TryParse(Environment.GetEnvironmentVariable("FAULTLINE_WAIT_SPIN_US"), out var us) && us >= 0 ? us : null;
    private long _spinTicks = TicksOf(SpinOverrideUs ?? DefaultWaitSpinUs);

    private static long TicksOf(double us) => (long)Math.Round(us * Stopwatch.Frequency / 1e6);

    /// <summary>How long a fault path spins for its page before it blocks, µs.</summary>
    public double WaitSpinUs => Interlocked.Read(ref _spinTicks) * 1e6 / Stopwatch.Frequency;

    /// <summary>
    /// Sizes the spin to the link: the round trip's p90 plus 20 µs (the source's demand server and this end's urgent
    /// receiver), if that is at most 100 µs; a longer link keeps the 20 µs spin. FAULTLINE_WAIT_SPIN_US, if set, wins.
    /// A fault path that blocks before its page lands pays a cross-CPU wake-up, 15–27 µs in this nested VM (traced: the
    /// fault p50 of a 1 GiB run was either ~50 µs, woken within 1–5 µs of the page, or ~87 µs, woken 15–27 µs after it,
    /// with a 20 µs spin and a ~55 µs round trip; with the spin sized to the round trip that hop is ~1 µs). On a link
    /// with 30 µs emulated each way (RTT ~90–110 µs) a 122–136 µs spin made faults slower, p50 126–148 against 108–114
    /// µs with 20 µs (4 interleaved rounds): a spinning fault path keeps busy a CPU that the delay pumps' and carriers'
    /// wake-ups would otherwise often find idle. Returns the spin, µs.
    /// </summary>
    public double SpinForRoundTrip(LatencySummary rtt)
    {
        var sized = rtt.P90 + 20;
        var us = SpinOverrideUs ?? (sized > MaxWaitSpinUs ? DefaultWaitSpinUs : Math.Max(sized, DefaultWaitSpinUs));
        Interlocked.Exchange(ref _spinTicks, TicksOf(us));
        return WaitSpinUs;
    }

    public WaitHandle AllReceived => _allReceived.WaitHandle;
    public long ReceivedCount => Interlocked.Read(ref _receivedCount);
    public long DemandPages => Interlocked.Read(ref _demandPages);
    public long PushedPages => Interlocked.Read(ref _pushedPages);
    public long ZeroPages => Interlocked.Read(ref _zeroPages);
    public long Duplicates => Interlocked.Read(ref _duplicates);
    public long InstalledByReceiver => Interlocked.Read(ref _installedByReceiver);
    public long HandedToWaiters => Interlocked.Read(ref _handedToWaiters);
    public long KeptForLaterAsk => Interlocked.Read(ref _early_count);
    public long DemandsSent => Interlocked.Read(ref _demandsSent);
    public long AlreadyArrived => Interlocked.Read(ref _alreadyArrived);
    /// <summary>PageRun frames received.</summary>
    public long RunFrames => Interlocked.Read(ref _runFrames);
    /// <summary>First copies that arrived in a run while a fault path owned the page (handed to its waiter or kept).</summary>
    public long RunPagesToFaultPath => Interlocked.Read(ref _runPagesToFaultPath);

    public string Describe() => $"remote source over {_urgent?.Peer}";

    // ---- fault path ---------------------------------------------------------------------------------------------

    public void ReadPage(GuestAddress page, Span<byte> destination)
    {
        var t0 = Stopwatch.GetTimestamp();
        var idx = (page.Value - _ram.Base.Value) >> GuestAddress.PageShift;
        var w = t_waiter ??= new Waiter();
        t_lastFetched = idx;
        try { Fetch(idx, destination, w, t0); }
        finally
        {
            // a vCPU thread stays raised until its page is installed too; DestinationGuest lowers it after the exit
            if (ThreadPriority.IsRaised && !DestinationGuest.IsVcpuThread) ThreadPriority.LowerToNormal();
        }
    }

    private void Fetch(ulong idx, Span<byte> destination, Waiter w, long t0)
    {
        lock (_gate)
        {
            if (_failed is { } f) { Failed(destination, f); return; }
            if (_early.Remove(idx, out var early))
            {
                early.CopyTo(destination);
                Interlocked.Increment(ref _alreadyArrived);
                Done(idx, t0);
                return;
            }
            w.Arm(idx);
            _waiting[idx] = w;
        }
        // from here until the page is in, this thread is on the demand path: ahead of the push, the receivers and the guest
        if (!ThreadPriority.IsRaised) ThreadPriority.RaiseForLatency();
        try
        {
            Span<byte> req = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(req, idx);
            DemandTrace.Hop(idx, "dest-send");
            _urgent!.Send(FrameType.Demand, 0, req);
            Interlocked.Increment(ref _demandsSent);
        }
        catch (MigrationException e) { Fail(e); }
        if (!w.Wait(_pageTimeout, _spinTicks))
            Fail(new MigrationException($"page {idx} did not arrive within {_pageTimeout.TotalSeconds:0.#} s"));
        if (_failed is { } f2 && !w.Filled) { Failed(destination, f2); return; }
        w.Buffer.CopyTo(destination);
        DemandTrace.Hop(idx, "dest-woken");
        Done(idx, t0);
    }

    private void Done(ulong idx, long t0)
    {
        var ns = Clock.ToNanoseconds(Stopwatch.GetTimestamp() - t0);
        Fetches.Record(ns);
        if (!DestinationGuest.IsVcpuThread)
            Interlocked.Add(ref FetchNsByRange[Math.Min((ulong)FetchNsByRange.Length - 1, (idx << 12) / _bytesPerVcpu)], ns);
    }

    /// <summary>
    /// After a failure: a vCPU thread gets the error; a uffd reader thread (whose engine loop must not die from an
    /// exception) gets zeros for a guest that is being stopped and torn down anyway.
    /// </summary>
    private static void Failed(Span<byte> destination, Exception f)
    {
        if (DestinationGuest.IsVcpuThread) throw f as MigrationException ?? new MigrationException(f.Message, f);
        destination.Clear();
    }

    // ---- receive path -------------------------------------------------------------------------------------------

    /// <summary>A page (or a zero-page marker: <paramref name="bytes"/> empty) arrived. Receiver threads only; never waits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public void OnPage(ulong idx, ReadOnlySpan<byte> bytes, PageFlags flags)
    {
        if (idx >= Pages) throw new MigrationException($"source sent page {idx}, out of range (guest RAM has {Pages} pages)");
        if (Interlocked.CompareExchange(ref _arrivedOnce[idx], 1, 0) != 0) { Interlocked.Increment(ref _duplicates); return; }
        var zero = bytes.IsEmpty;
        if (zero) { Interlocked.Increment(ref _zeroPages); bytes = ZeroPage; }
        else _received.Write(idx, bytes[..Wire.PageSize]);
        Interlocked.Increment(ref (flags & PageFlags.Demand) != 0 ? ref _demandPages : ref _pushedPages);

        var gpa = _ram.Base + (idx << GuestAddress.PageShift);
        if (_engine!.TryInstall(gpa, bytes)) Interlocked.Increment(ref _installedByReceiver);
        else
        {
            lock (_gate)
            {
                if (_waiting.Remove(idx, out var w)) { DemandTrace.Hop(idx, (flags & PageFlags.Demand) != 0 ? "dest-rx-urgent" : "dest-rx-push"); w.Fill(bytes); Interlocked.Increment(ref _handedToWaiters); }
                else if (!_engine.Tracker.IsPresent(idx)) { _early[idx] = bytes.ToArray(); Interlocked.Increment(ref _early_count); }
            }
        }
        if (Interlocked.Increment(ref _receivedCount) == (long)Pages) _allReceived.Set();
    }

    /// <summary>
    /// A run of <paramref name="count"/> consecutive pages from <paramref name="first"/> arrived (push). Receiver
    /// threads only; never waits. Each page whose first copy this is goes into the received image; those pages are
    /// installed with the engine's TryInstallRun (one ioctl per contiguous sub-run nobody else owns); a first copy a
    /// fault path owns is handled exactly as <see cref="OnPage"/> does (to its waiter, or kept until it asks); later
    /// copies are dropped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public void OnPageRun(ulong first, int count, ReadOnlySpan<byte> bytes, PageFlags flags)
    {
        if (count is < 1 or > Wire.MaxRunPages || first >= Pages || (ulong)count > Pages - first)
            throw new MigrationException($"source sent pages {first}..{first + (ulong)Math.Max(count, 1) - 1}, out of range (guest RAM has {Pages} pages)");
        if (bytes.Length != count * Wire.PageSize) throw new MigrationException($"page run of {count} pages carries {bytes.Length} bytes");
        Span<bool> fresh = stackalloc bool[count];
        Span<bool> installed = stackalloc bool[count];
        installed.Clear();
        var arrived = 0;
        for (var i = 0; i < count; i++)
        {
            fresh[i] = Interlocked.CompareExchange(ref _arrivedOnce[first + (ulong)i], 1, 0) == 0;
            if (fresh[i]) arrived++;
        }
        Interlocked.Add(ref _duplicates, count - arrived);
        Interlocked.Increment(ref _runFrames);
        if (arrived == 0) return;
        Interlocked.Add(ref (flags & PageFlags.Demand) != 0 ? ref _demandPages : ref _pushedPages, arrived);

        // each contiguous sub-run of first copies (all of the run, usually): into the received image with one copy,
        // then installed with one ioctl per part of it nobody else owns
        var installedNow = 0;
        for (var i = 0; i < count;)
        {
            if (!fresh[i]) { i++; continue; }
            var j = i + 1;
            while (j < count && fresh[j]) j++;
            var sub = bytes.Slice(i * Wire.PageSize, (j - i) * Wire.PageSize);
            _received.Write(first + (ulong)i, sub);
            installedNow += _engine!.TryInstallRun(_ram.Base + ((first + (ulong)i) << GuestAddress.PageShift), j - i, sub, installed[i..j]);
            i = j;
        }
        Interlocked.Add(ref _installedByReceiver, installedNow);
        if (installedNow < arrived)
        {
            // first copies a fault path owns: its waiter gets them, or they wait until it asks
            lock (_gate)
            {
                for (var i = 0; i < count; i++)
                {
                    if (!fresh[i] || installed[i]) continue;
                    var idx = first + (ulong)i;
                    var page = bytes.Slice(i * Wire.PageSize, Wire.PageSize);
                    Interlocked.Increment(ref _runPagesToFaultPath);
                    if (_waiting.Remove(idx, out var w)) { DemandTrace.Hop(idx, "dest-rx-run"); w.Fill(page); Interlocked.Increment(ref _handedToWaiters); }
                    else if (!_engine!.Tracker.IsPresent(idx)) { _early[idx] = page.ToArray(); Interlocked.Increment(ref _early_count); }
                }
            }
        }
        if (Interlocked.Add(ref _receivedCount, arrived) == (long)Pages) _allReceived.Set();
    }

    /// <summary>Wakes every waiter with <paramref name="e"/>; later ReadPage calls fail at once.</summary>
    public void Fail(Exception e)
    {
        lock (_gate)
        {
            _failed ??= e;
            foreach (var w in _waiting.Values) w.Abort();
            _waiting.Clear();
        }
    }

    public void Dispose() => _allReceived.Dispose();

    /// <summary>One per fault-path thread, reused: a page buffer and a flag it spins on briefly before blocking.</summary>
    private sealed class Waiter
    {
        private readonly ManualResetEventSlim _event = new(false, spinCount: 1);
        public readonly byte[] Buffer = new byte[Wire.PageSize];
        public ulong Index;
        public volatile bool Filled;

        public void Arm(ulong index) { Index = index; Filled = false; _event.Reset(); }
        public void Fill(ReadOnlySpan<byte> bytes) { bytes.CopyTo(Buffer); Filled = true; _event.Set(); }
        public void Abort() => _event.Set();
        /// <summary>
        /// Spins on the flag for up to <paramref name="spinTicks"/> (see <see cref="RemotePageSource.WaitSpinUs"/>: a
        /// page that arrives meanwhile costs no wake-up), then blocks. The caller raised its priority before sending
        /// the demand: woken at nice 0 behind the push, the receivers and the other vCPUs on 2 cores, a thread waited
        /// milliseconds for its slice.
        /// </summary>
        public bool Wait(TimeSpan timeout, long spinTicks)
        {
            var until = Stopwatch.GetTimestamp() + spinTicks;
            while (!Filled && !_event.IsSet && Stopwatch.GetTimestamp() < until) Thread.SpinWait(20);
            if (Filled) return true;
            return _event.Wait(timeout);
        }
    }
}
