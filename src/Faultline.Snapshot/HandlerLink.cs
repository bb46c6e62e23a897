using System.Net.Sockets;
using System.Text;
using Faultline.Kvm.Io;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Snapshot;

/// <summary>
/// The restoring side's connection to its page handler, and what happens when the handler dies (its socket reads EOF)
/// or stops answering (<see cref="Stalled"/>). Without restarts: the restore is lost. With <see cref="HandlerRestart"/>: a new handler is started, connected and
/// sent the regions JSON with the same userfaultfd (SCM_RIGHTS), and then the whole registered range is woken
/// (UFFDIO_WAKE). The wake is what makes this work: the dead handler may have read fault messages it never resolved,
/// and those are gone with it; their threads sleep in the userfaultfd's wait queue (the fd is still open here, so the
/// kernel does not release them) until a wake. Woken, every such thread retries its fault, which queues a fresh
/// message for the new handler; a thread whose page is present meanwhile just runs on. Pages the dead handler
/// installed stay installed (UFFDIO_COPY builds the whole page, then sets its PTE once: a page is there or not).
/// </summary>
internal sealed class HandlerLink : IDisposable
{
    private readonly string _directory;
    private readonly byte[] _regions;
    private readonly Userfaultfd _uffd;
    private readonly HostAddress _start;
    private readonly ulong _length;
    private readonly HandlerRestart? _restart;
    private Socket _socket;
    private HandlerProcess? _ours;   // the handler this restore started (null: the user's own, never killed)
    private string _path;

    public int Restarts { get; private set; }
    /// <summary>The socket of the handler serving now.</summary>
    public string SocketPath => _path;
    /// <summary>Why the restore is lost (the handler died and no new one could take over); null while it is served.</summary>
    public string? Lost { get; private set; }

    public HandlerLink(string directory, string handlerSocket, string regionsJson, Userfaultfd uffd, HostAddress start, ulong length, HandlerRestart? restart)
    {
        _directory = directory; _regions = Encoding.UTF8.GetBytes(regionsJson); _uffd = uffd; _start = start; _length = length; _restart = restart;
        _path = handlerSocket;
        _socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try { _socket.Connect(new UnixDomainSocketEndPoint(handlerSocket)); }
        catch (SocketException e)
        {
            _socket.Dispose();
            throw new FaultlineException($"cannot connect to the page handler at {handlerSocket}: {e.Message}");
        }
        FdPassing.Send(_socket.SafeHandle, _regions, _uffd);
    }

    /// <summary>True when the restore is lost. A handler found dead is replaced here, if restarts are left (this blocks while the new one starts).</summary>
    public bool CheckLost()
    {
        if (Lost is not null) return true;
        if (!(_socket.Poll(0, SelectMode.SelectRead) && _socket.Available == 0)) return false;   // EOF: the handler's end closed
        return !TakeOver($"the page handler at {_path} went away during the restore", "went away");
    }

    /// <summary>
    /// The handler is alive but left a fault unanswered too long (<see cref="HandlerStallWatch"/>): one this restore
    /// started is killed and replaced, if restarts are left; the user's own handler is not (it holds the userfaultfd
    /// and may still answer), so the restore is lost. True when lost.
    /// </summary>
    public bool Stalled(string what)
    {
        if (Lost is not null) return true;
        if (_ours is null) { Lost = $"{what}: the VM was stopped"; return true; }
        return !TakeOver(what, "stopped answering");
    }

    /// <summary>A new handler in place of the one at <see cref="_path"/>, which is killed if it is ours; false (and <see cref="Lost"/>) when none can take over.</summary>
    private bool TakeOver(string what, string why)
    {
        var dead = _path;
        var allowed = _restart?.Attempts ?? 0;
        if (Restarts >= allowed)
        {
            Lost = allowed == 0 ? $"{what}: the VM was stopped" : $"{what}, after {Restarts} handler restart(s): the VM was stopped";
            return false;
        }
        _socket.Dispose();
        _ours?.Dispose();   // dead already (reaped, its socket file removed), or stalled: killed first
        _ours = null;
        var attempt = Restarts + 1;
        var path = Path.Combine(Path.GetTempPath(), $"faultline-handler-{Environment.ProcessId}-{attempt}-{Guid.NewGuid().ToString("N")[..8]}.sock");
        try
        {
            _ours = HandlerProcess.Start(_restart!, _directory, path);
            _socket = _ours.Connection;
            FdPassing.Send(_socket.SafeHandle, _regions, _uffd);
            _uffd.Wake(_start, _length);   // after the hand-over: every waiting thread refaults, and the new handler gets the message
        }
        catch (Exception e) when (e is FaultlineException or SocketException or IOException)
        {
            _ours?.Dispose();
            _ours = null;
            Lost = $"{what} and a new one did not start ({e.Message}): the VM was stopped";
            return false;
        }
        Restarts = attempt;
        _path = path;
        _restart!.Log($"handler restart {attempt} of {allowed}: the page handler at {dead} {why}; pid {_ours.Pid} serves on {path}, the whole {_length / 1048576} MiB range woken");
        return true;
    }

    public void Dispose()
    {
        if (_ours is null) _socket.Dispose();
        _ours?.Dispose();   // closes the connection first, then kills the handler this restore started
    }
}
