using System.Diagnostics;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Snapshot;

/// <summary>
/// Makes the whole snapshot resident while the guest runs (thread <c>fl-fill</c>): first the recorded working set in
/// its touch order (replay), then every page in address order. Pages present already are skipped, holes are installed
/// as zeros without reading, runs of data pages are read with one pread and installed with one ioctl. The chunk adapts
/// as CRIU's lazy-pages daemon learned to (the replay does not back off: its pages are the ones the vCPUs touch next): it doubles after a chunk during which no vCPU faulted (up to
/// <see cref="MaxChunk"/> pages) and halves, yielding the CPU, after one during which a vCPU did (down to
/// <see cref="MinChunk"/>), so a background read never sits long in front of a fault.
/// </summary>
internal sealed class BackgroundFill : IDisposable
{
    public const int MinChunk = 8, MaxChunk = 1024;
    private const int Page = SnapshotFiles.PageSize;
    private readonly OpenedSnapshot _snap;
    private readonly SnapshotPageSource _source;
    private readonly IPageSink _sink;
    private readonly GuestAddress _base;
    private readonly uint[] _replay;
    // allocated on the fill thread, not on the restore's way to the first instruction (8 MiB of fresh memory to touch)
    private byte[] _buffer = [], _zeros = [];
    private bool[] _installed = [];
    private readonly Thread _thread;
    private volatile bool _stop;
    private int _chunk = MinChunk;
    private long _lastDemanded;

    public BackgroundFill(OpenedSnapshot snap, SnapshotPageSource source, IPageSink sink, uint[] replay)
    {
        _snap = snap; _source = source; _sink = sink; _replay = replay;
        _base = new GuestAddress(snap.Manifest.RamBase);
        _thread = new Thread(Run) { Name = "fl-fill", IsBackground = true };
    }

    public long PrefetchedData { get; private set; }
    public long PrefetchedZero { get; private set; }
    /// <summary>Pages of the replayed working set this fill installed.</summary>
    public long ReplayInstalled { get; private set; }
    /// <summary>When the replayed working set was all present (Stopwatch ticks; 0: no replay).</summary>
    public long ReplayDoneTimestamp { get; private set; }
    public long DoneTimestamp { get; private set; }
    public int Grows { get; private set; }
    public int Shrinks { get; private set; }
    public int LargestChunk { get; private set; } = MinChunk;
    public Exception? Error { get; private set; }
    public bool Finished => DoneTimestamp != 0;

    public void Start() => _thread.Start();

    private void Run()
    {
        try
        {
            _buffer = new byte[MaxChunk * Page];
            _zeros = new byte[MaxChunk * Page];
            _installed = new bool[MaxChunk];
            _lastDemanded = _source.Demanded;
            for (var i = 0; i < _replay.Length && !_stop;)
            {
                // a run of consecutive pages in the touch order, at most one chunk
                var j = i + 1;
                while (j < _replay.Length && j - i < MaxChunk && _replay[j] == _replay[j - 1] + 1) j++;
                ReplayInstalled += FillRange(_replay[i], j - i);
                i = j;
                _lastDemanded = _source.Demanded;   // no backing off: the vCPUs need these pages next, in this order
            }
            if (_replay.Length > 0) ReplayDoneTimestamp = Stopwatch.GetTimestamp();
            var pages = _snap.Manifest.Pages;
            for (ulong p = 0; p < pages && !_stop && !_sink.Tracker.Complete;)
            {
                var n = (int)Math.Min((ulong)_chunk, pages - p);
                FillRange(p, n);
                p += (ulong)n;
                Adapt();
            }
        }
        catch (Exception e) when (e is PageUnavailableException or SnapshotException)
        {
            Error = _source.Failure ?? e;
        }
        catch (Exception e)
        {
            Error = e;
        }
        finally
        {
            DoneTimestamp = Stopwatch.GetTimestamp();
        }
    }

    /// <summary>Installs the pages of [first, first+count) that are not present; returns how many this call installed.</summary>
    private long FillRange(ulong first, int count)
    {
        var t = _sink.Tracker;
        var end = first + (ulong)count;
        if (end > _snap.Manifest.Pages) end = _snap.Manifest.Pages;
        long done = 0;
        for (var i = first; i < end;)
        {
            // a page a fault has asked for (or is installing) is left to it: only missing pages are read here
            if (t.StateOf(i) != PageTracker.Missing) { i++; continue; }
            var data = _snap.Index.IsData(i);
            var j = i + 1;
            while (j < end && t.StateOf(j) == PageTracker.Missing && _snap.Index.IsData(j) == data) j++;
            var n = (int)(j - i);
            var bytes = data ? _buffer.AsSpan(0, n * Page) : _zeros.AsSpan(0, n * Page);
            if (data) _source.ReadRun(i, n, bytes);
            var k = data ? _sink.InstallRun(_base + (i << 12), n, bytes, _installed) : _sink.InstallZeroRun(_base + (i << 12), n, bytes, _installed);
            if (data) PrefetchedData += k; else PrefetchedZero += k;
            done += k;
            i = j;
        }
        return done;
    }

    private void Adapt()
    {
        var d = _source.Demanded;
        if (d != _lastDemanded)
        {
            if (_chunk > MinChunk) { _chunk /= 2; Shrinks++; }
            _lastDemanded = d;
            Thread.Yield();   // a vCPU is faulting: let it have the CPU
        }
        else if (_chunk < MaxChunk)
        {
            _chunk *= 2;
            Grows++;
            LargestChunk = Math.Max(LargestChunk, _chunk);
        }
    }

    public void Dispose()
    {
        _stop = true;
        if (_thread.IsAlive) _thread.Join();
    }
}
