using System.Buffers.Binary;
using System.Net.Sockets;
using Faultline.Kvm.Io;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Snapshot;

/// <summary>
/// <c>snapshot serve</c>: an out-of-process page handler speaking Firecracker's protocol. A VMM connects to the Unix
/// socket and sends one message: the JSON array of its guest memory regions (<see cref="HandlerRegions"/>) with its
/// userfaultfd attached (SCM_RIGHTS). The handler learns the peer with SO_PEERCRED and then, on a thread of its own
/// (<c>fl-handlerN</c>), answers each page fault from the snapshot: a hole with UFFDIO_ZEROPAGE, a data page with a
/// pread, its CRC32C check and UFFDIO_COPY. A UFFD_EVENT_REMOVE (the VMM dropped a range: a balloon, madvise) makes
/// later faults there zero pages. A malformed message is refused with one log line and the server goes on serving
/// others; a connection ends when its peer closes the socket.
/// </summary>
public sealed class SnapshotServer : IDisposable
{
    private const int SO_PEERCRED = 17, SOL_SOCKET = 1;
    private readonly OpenedSnapshot _snap;
    private readonly string _path;
    private readonly Action<string> _log;
    private readonly StopEvent _stop = new();
    private readonly List<Thread> _threads = [];
    private Socket? _listener;
    private Thread? _accept;
    private long _served, _zero, _refused, _connections;
    private int _disposed;

    public SnapshotServer(OpenedSnapshot snapshot, string socketPath, Action<string> log)
    {
        _snap = snapshot; _path = socketPath; _log = log;
    }

    public long PagesServed => Interlocked.Read(ref _served);
    public long ZeroPagesServed => Interlocked.Read(ref _zero);
    public long Refused => Interlocked.Read(ref _refused);
    public long Connections => Interlocked.Read(ref _connections);

    public void Start()
    {
        if (File.Exists(_path) || Directory.Exists(_path)) throw new UsageException($"{_path} exists: give serve a new socket path");
        var dir = Path.GetDirectoryName(Path.GetFullPath(_path));
        if (dir is not null && !Directory.Exists(dir)) throw new UsageException($"{dir} does not exist");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _listener.Bind(new UnixDomainSocketEndPoint(_path));
            _listener.Listen(16);
        }
        catch (SocketException e)
        {
            _listener.Dispose();
            throw new FaultlineException($"cannot listen on {_path}: {e.Message}");
        }
        _accept = new Thread(AcceptLoop) { Name = "fl-serve", IsBackground = true };
        _accept.Start();
    }

    private void AcceptLoop()
    {
        while (!_stop.IsSet)
        {
            Socket c;
            try
            {
                // a poll, not a blocking accept: closing a socket does not wake an accept() blocked on another thread
                if (!_listener!.Poll(100_000, SelectMode.SelectRead)) continue;
                c = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { break; }
            var n = Interlocked.Increment(ref _connections);
            var t = new Thread(() => Serve(c)) { Name = $"fl-handler{n % 1000}", IsBackground = true };
            lock (_threads) _threads.Add(t);
            t.Start();
        }
    }

    private void Serve(Socket c)
    {
        Userfaultfd? uffd = null;
        using (c)
        {
            var (pid, uid) = PeerOf(c);
            try
            {
                var buf = new byte[64 * 1024];
                var n = FdPassing.Receive(c.SafeHandle, buf, out uffd);
                if (uffd is null) throw new SnapshotException("no userfaultfd came with the region message (SCM_RIGHTS)");
                var regions = HandlerRegions.Parse(buf.AsSpan(0, n), _snap.Manifest.RamBytes);
                _log($"serving pid {pid} (uid {uid}): {regions.Length} region(s), {regions.Sum(r => (decimal)r.Size) / 1048576:0.#} MiB");
                ServeFaults(c, uffd, regions);
                _log($"pid {pid} disconnected");
            }
            catch (SnapshotException e)
            {
                Interlocked.Increment(ref _refused);
                _log($"refused pid {pid}: {e.Message}");
            }
            catch (PageUnavailableException e)
            {
                _log($"stopped serving pid {pid}: {e.Message}");
            }
            finally { uffd?.Dispose(); }
        }
    }

    private unsafe void ServeFaults(Socket c, Userfaultfd uffd, HandlerRegion[] regions)
    {
        var source = new SnapshotPageSource(_snap, recordTouches: false);
        var removed = new List<(ulong Start, ulong End)>();
        var page = new byte[SnapshotFiles.PageSize];
        while (!_stop.IsSet)
        {
            if (!uffd.WaitReadable(_stop, 100))
            {
                if (c.Poll(0, SelectMode.SelectRead) && c.Available == 0) return;   // the VMM closed its end
                continue;
            }
            var ev = uffd.ReadEvent();
            switch (ev.Kind)
            {
                case UffdEventKind.Closed: return;
                case UffdEventKind.Remove: removed.Add((ev.Address, ev.End)); continue;
                case UffdEventKind.PageFault: break;
                default: continue;
            }
            var at = ev.Address & ~(ulong)(SnapshotFiles.PageSize - 1);
            var r = Array.FindIndex(regions, x => at >= x.BaseHostVirtAddr && at < x.End);
            if (r < 0) throw new PageUnavailableException($"a fault at 0x{at:x} is outside every region the VMM sent");
            var index = (regions[r].Offset + (at - regions[r].BaseHostVirtAddr)) / SnapshotFiles.PageSize;
            var host = new HostAddress(at);
            ResolveOutcome o;
            if (!_snap.Index.IsData(index) || removed.Exists(x => at >= x.Start && at < x.End))
            {
                Interlocked.Increment(ref _zero);   // counted before the ioctl wakes the faulting thread, which may look at once
                o = uffd.ZeroPage(host, SnapshotFiles.PageSize);
            }
            else
            {
                source.ReadRun(index, 1, page);
                Interlocked.Increment(ref _served);
                fixed (byte* p = page) o = uffd.Copy(host, p, SnapshotFiles.PageSize);
            }
            if (o == ResolveOutcome.AlreadyPresent) uffd.Wake(host, SnapshotFiles.PageSize);
        }
    }

    /// <summary>SO_PEERCRED: the connecting process's pid and uid.</summary>
    private static (int Pid, int Uid) PeerOf(Socket c)
    {
        Span<byte> cred = stackalloc byte[12];
        try
        {
            c.GetRawSocketOption(SOL_SOCKET, SO_PEERCRED, cred);
            return (BinaryPrimitives.ReadInt32LittleEndian(cred), BinaryPrimitives.ReadInt32LittleEndian(cred[4..]));
        }
        catch (SocketException) { return (-1, -1); }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Set();
        _accept?.Join();
        _listener?.Dispose();
        Thread[] ts;
        lock (_threads) ts = [.. _threads];
        foreach (var t in ts) t.Join();
        _stop.Dispose();
        try { File.Delete(_path); } catch (IOException) { }
    }
}
