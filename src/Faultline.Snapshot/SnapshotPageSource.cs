using System.Diagnostics;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Snapshot;

/// <summary>
/// Pages from a snapshot's memory file, on first touch: a hole (a zero page in the index) is installed as zeros without
/// reading the file; a data page is read with one pread into the faulting thread's page buffer, checked against its
/// CRC32C, and installed before <see cref="Request"/> returns (an immediate source). A page that fails its checksum
/// fails the restore: waiting faults return with that error, the VM is stopped, and <see cref="Failure"/> says which
/// page. Records the order of first touches (<see cref="Touches"/>) and each request's service time. Allocation-free
/// per request.
/// </summary>
public sealed class SnapshotPageSource : IImmediatePageSource
{
    private static readonly byte[] Zero = new byte[SnapshotFiles.PageSize];
    private readonly OpenedSnapshot _snap;
    private readonly GuestAddress _base;
    private readonly uint[] _touches;
    private int _touchCount;
    private long _reads, _zeros;
    private IPageSink? _sink;
    private volatile SnapshotException? _failure;

    /// <summary>Latency samples kept (the first faults'): a fixed size, so that nothing on the way to the first instruction grows with RAM.</summary>
    public const int LatencySamples = 1 << 17;

    /// <param name="recordTouches">Keep the order of first touches (4 bytes per page of RAM): for recording or judging a replay.</param>
    public SnapshotPageSource(OpenedSnapshot snapshot, bool recordTouches)
    {
        _snap = snapshot;
        _base = new GuestAddress(snapshot.Manifest.RamBase);
        _touches = recordTouches ? new uint[snapshot.Manifest.Pages] : [];
        ServiceLatency = new LatencyRecorder((int)Math.Min(snapshot.Manifest.Pages + 16, LatencySamples));
    }

    public bool CompletesOnRequest => true;
    public TimeSpan ExpectedLatency => TimeSpan.Zero;
    /// <summary>Data pages read from the file and installed for a fault.</summary>
    public long DemandReads => Interlocked.Read(ref _reads);
    /// <summary>Holes installed for a fault (the shared zero page where the memory allows), without reading.</summary>
    public long DemandZeros => Interlocked.Read(ref _zeros);
    public long Demanded => DemandReads + DemandZeros;
    /// <summary>Request → installed, per demanded page (ns).</summary>
    public LatencyRecorder ServiceLatency { get; }
    public SnapshotException? Failure => _failure;

    /// <summary>The pages demanded so far, in the order their first fault came.</summary>
    public ReadOnlySpan<uint> Touches => _touches.AsSpan(0, Math.Min(Volatile.Read(ref _touchCount), _touches.Length));

    public void Start(IPageSink sink) => _sink = sink;

    public void Request(GuestAddress page)
    {
        var t0 = Stopwatch.GetTimestamp();
        var index = (page.Value - _base.Value) >> 12;
        var i = Interlocked.Increment(ref _touchCount) - 1;
        if (i < _touches.Length) _touches[i] = (uint)index;
        if (!_snap.Index.IsData(index))
        {
            Span<bool> one = stackalloc bool[1];
            if (_sink!.InstallZeroRun(page, 1, Zero, one) == 1) Interlocked.Increment(ref _zeros);
        }
        else
        {
            var buf = PageBuffer.Span;
            ReadData(index, buf);
            if (_sink!.Install(page, buf)) Interlocked.Increment(ref _reads);   // else the fill installed it meanwhile
        }
        ServiceLatency.Record((long)Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
    }

    /// <summary>The page's bytes (eager population, a page cache filled up front): holes as zeros, without reading.</summary>
    public void Read(GuestAddress page, Span<byte> destination)
    {
        var index = (page.Value - _base.Value) >> 12;
        if (!_snap.Index.IsData(index)) destination[..SnapshotFiles.PageSize].Clear();
        else ReadData(index, destination);
    }

    /// <summary>Reads <paramref name="pages"/> consecutive data pages from <paramref name="first"/> into <paramref name="destination"/> and checks each.</summary>
    internal void ReadRun(ulong first, int pages, Span<byte> destination)
    {
        var bytes = pages * SnapshotFiles.PageSize;
        var n = RandomAccess.Read(_snap.Memory, destination[..bytes], (long)first * SnapshotFiles.PageSize);
        if (n != bytes) throw Fail($"{_snap.Files.Memory} ends at page {first + (ulong)(n / SnapshotFiles.PageSize)}: it was truncated during the restore");
        for (var p = 0; p < pages; p++) Check(first + (ulong)p, destination.Slice(p * SnapshotFiles.PageSize, SnapshotFiles.PageSize));
    }

    private void ReadData(ulong index, Span<byte> destination) => ReadRun(index, 1, destination);

    private void Check(ulong index, ReadOnlySpan<byte> bytes)
    {
        var crc = Crc32C.Compute(bytes);
        var want = _snap.Index.CrcOf(index);
        if (crc != want)
            throw Fail($"{_snap.Files.Memory}: page {index} (GPA 0x{_base.Value + (index << 12):x}) fails its checksum (crc32c 0x{crc:x8}, the index says 0x{want:x8}): the restore was stopped");
    }

    /// <summary>Fails the restore: the first failure is kept, every waiting fault returns, and the caller's thread gets a PageUnavailableException.</summary>
    internal PageUnavailableException Fail(string message)
    {
        var e = new SnapshotException(message);
        Interlocked.CompareExchange(ref _failure, e, null);
        _sink?.Fail(_failure!);
        return new PageUnavailableException(_failure!.Message, _failure);
    }

    public string Describe() => $"snapshot {_snap.Files.Directory}";
}
