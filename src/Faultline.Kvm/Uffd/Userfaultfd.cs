using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;

namespace Faultline.Kvm.Uffd;

/// <summary>
/// A userfaultfd: opened through /dev/userfaultfd (falling back to the syscall), API and features negotiated once,
/// ranges registered, pages resolved with COPY / ZEROPAGE / CONTINUE / WAKE. Fault messages are read without allocating.
/// Not UFFD_USER_MODE_ONLY: KVM's own GUP faults are kernel-mode.
/// </summary>
public sealed unsafe class Userfaultfd : IDisposable
{
    public const string DevicePath = "/dev/userfaultfd";
    private readonly UffdFd _fd;
    private readonly int _raw;
    private bool _addedRef;

    /// <summary>Features the kernel offered (everything available), after negotiation.</summary>
    public UffdFeatures Available { get; }
    /// <summary>Features this fd was opened with.</summary>
    public UffdFeatures Enabled { get; }
    public bool NonBlocking { get; }
    /// <summary>The fd number (valid until Dispose), for passing it to another process.</summary>
    internal int RawFd => _raw;

    private Userfaultfd(UffdFd fd, UffdFeatures available, UffdFeatures enabled, bool nonBlocking)
    {
        _fd = fd; Available = available; Enabled = enabled; NonBlocking = nonBlocking;
        _fd.DangerousAddRef(ref _addedRef);
        _raw = _fd.Fd;
    }

    /// <summary>Opens a userfaultfd requiring <paramref name="features"/> (UFFDIO_API fails with EINVAL if one is missing).</summary>
    public static Userfaultfd Open(UffdFeatures features, bool nonBlocking = true)
    {
        var fd = OpenRaw(nonBlocking);
        var api = new UffdioApi { Api = UffdConst.UFFD_API, Features = (ulong)features };
        if (Libc.Ioctl(fd.Fd, UffdIoctls.UFFDIO_API, &api) != 0)
        {
            var e = Marshal.GetLastPInvokeError();
            fd.Dispose();
            if (e == Errno.EINVAL)
            {
                var offered = QueryFeatures();
                throw new HostSupportException($"userfaultfd lacks feature(s) {(features & ~offered)}: this kernel offers {offered}");
            }
            throw new KvmException("UFFDIO_API", e);
        }
        return new Userfaultfd(fd, (UffdFeatures)api.Features, features, nonBlocking);
    }

    /// <summary>
    /// Takes over a userfaultfd another process created, negotiated and registered (a VMM handing its guest memory to
    /// an out-of-process page handler): its features are not known here.
    /// </summary>
    internal static Userfaultfd Adopt(UffdFd fd) => new(fd, UffdFeatures.None, UffdFeatures.None, nonBlocking: false);

    /// <summary>The features this kernel offers (a throw-away fd negotiated with none).</summary>
    public static UffdFeatures QueryFeatures()
    {
        using var fd = OpenRaw(true);
        var api = new UffdioApi { Api = UffdConst.UFFD_API };
        if (Libc.Ioctl(fd.Fd, UffdIoctls.UFFDIO_API, &api) != 0) throw new KvmException("UFFDIO_API", Marshal.GetLastPInvokeError());
        return (UffdFeatures)api.Features;
    }

    private static UffdFd OpenRaw(bool nonBlocking)
    {
        var flags = Libc.O_CLOEXEC | (nonBlocking ? Libc.O_NONBLOCK : 0);
        using (var dev = new PlainFd(Libc.Open(DevicePath, Libc.O_RDWR | Libc.O_CLOEXEC, 0)))
        {
            if (!dev.IsInvalid)
            {
                var fd = new UffdFd(Libc.Ioctl(dev.Fd, UffdIoctls.USERFAULTFD_IOC_NEW, (nuint)flags));
                if (!fd.IsInvalid) return fd;
            }
        }
        var devErr = Marshal.GetLastPInvokeError();
        var sys = new UffdFd((int)Libc.Syscall(Libc.SYS_userfaultfd, flags, 0, 0));
        if (!sys.IsInvalid) return sys;
        var e = Marshal.GetLastPInvokeError();
        throw new HostSupportException(
            $"{DevicePath} is not usable ({Errno.Name(devErr)}) and userfaultfd(2) failed ({Errno.Name(e)}): run as root, or set vm.unprivileged_userfaultfd=1");
    }

    /// <summary>Registers [start, start+len) of this process; returns the ioctls bitmask the range supports.</summary>
    public ulong Register(HostAddress start, ulong length, UffdRegisterMode mode)
    {
        var reg = new UffdioRegister { Range = new UffdioRange { Start = start.Value, Len = length }, Mode = (ulong)mode };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_REGISTER, &reg) != 0) throw new KvmException($"UFFDIO_REGISTER({mode})", Marshal.GetLastPInvokeError());
        return reg.Ioctls;
    }

    public void Unregister(HostAddress start, ulong length)
    {
        var r = new UffdioRange { Start = start.Value, Len = length };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_UNREGISTER, &r) != 0) throw new KvmException("UFFDIO_UNREGISTER", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_COPY: atomically installs <paramref name="length"/> bytes from <paramref name="src"/> at <paramref name="dst"/>.</summary>
    public ResolveOutcome Copy(HostAddress dst, void* src, ulong length, bool dontWake = false) => Copy(dst, src, length, out _, dontWake);

    /// <summary>
    /// UFFDIO_COPY over several pages. <paramref name="copied"/> is the kernel's uffdio_copy.copy: the bytes installed
    /// (all of them on <see cref="ResolveOutcome.Installed"/>). A copy that stops part-way (the next page exists, or
    /// the mapping changed) returns <see cref="ResolveOutcome.Retry"/> (EAGAIN) with the bytes done so far, which the
    /// kernel has already installed and woken; a copy whose first page exists returns AlreadyPresent with copied ≤ 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside a transfer
    public ResolveOutcome Copy(HostAddress dst, void* src, ulong length, out long copied, bool dontWake = false)
    {
        var op = new UffdioCopy { Dst = dst.Value, Src = (ulong)src, Len = length, Mode = dontWake ? UffdConst.UFFDIO_COPY_MODE_DONTWAKE : 0 };
        var r = Libc.Ioctl(_raw, UffdIoctls.UFFDIO_COPY, &op);
        copied = r == 0 ? (long)length : op.Copy;
        if (r == 0) return ResolveOutcome.Installed;
        return Outcome("UFFDIO_COPY", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_ZEROPAGE: installs zero pages.</summary>
    public ResolveOutcome ZeroPage(HostAddress dst, ulong length, bool dontWake = false)
    {
        var op = new UffdioZeropage { Range = new UffdioRange { Start = dst.Value, Len = length }, Mode = dontWake ? UffdConst.UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0 };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_ZEROPAGE, &op) == 0) return ResolveOutcome.Installed;
        return Outcome("UFFDIO_ZEROPAGE", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_CONTINUE: maps the page cache page already there (MINOR faults on shmem).</summary>
    public ResolveOutcome Continue(HostAddress dst, ulong length, bool dontWake = false) => Continue(dst, length, out _, dontWake);

    /// <summary>UFFDIO_CONTINUE over several pages; <paramref name="mapped"/> is uffdio_continue.mapped, with the same partial-progress rules as <see cref="Copy(HostAddress, void*, ulong, out long, bool)"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside a transfer
    public ResolveOutcome Continue(HostAddress dst, ulong length, out long mapped, bool dontWake = false)
    {
        var op = new UffdioContinue { Range = new UffdioRange { Start = dst.Value, Len = length }, Mode = dontWake ? UffdConst.UFFDIO_CONTINUE_MODE_DONTWAKE : 0 };
        var r = Libc.Ioctl(_raw, UffdIoctls.UFFDIO_CONTINUE, &op);
        mapped = r == 0 ? (long)length : op.Mapped;
        if (r == 0) return ResolveOutcome.Installed;
        return Outcome("UFFDIO_CONTINUE", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_MOVE: atomically moves anonymous pages from <paramref name="src"/> to <paramref name="dst"/> (dst registered, a hole).</summary>
    public ResolveOutcome Move(HostAddress dst, HostAddress src, ulong length, bool dontWake = false)
    {
        var op = new UffdioMove { Dst = dst.Value, Src = src.Value, Len = length, Mode = dontWake ? 1UL : 0 };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_MOVE, &op) == 0) return ResolveOutcome.Installed;
        return Outcome("UFFDIO_MOVE", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_WAKE: wakes threads waiting on faults in the range (needed after EEXIST or DONTWAKE).</summary>
    public void Wake(HostAddress start, ulong length)
    {
        var r = new UffdioRange { Start = start.Value, Len = length };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_WAKE, &r) != 0) throw new KvmException("UFFDIO_WAKE", Marshal.GetLastPInvokeError());
    }

    /// <summary>UFFDIO_WRITEPROTECT: sets or clears write protection on a WP-registered range.</summary>
    public void WriteProtect(HostAddress start, ulong length, bool protect)
    {
        var op = new UffdioWriteprotect { Range = new UffdioRange { Start = start.Value, Len = length }, Mode = protect ? UffdConst.UFFDIO_WRITEPROTECT_MODE_WP : 0 };
        if (Libc.Ioctl(_raw, UffdIoctls.UFFDIO_WRITEPROTECT, &op) != 0) throw new KvmException("UFFDIO_WRITEPROTECT", Marshal.GetLastPInvokeError());
    }

    private static ResolveOutcome Outcome(string call, int errno) => errno switch
    {
        Errno.EEXIST => ResolveOutcome.AlreadyPresent,
        Errno.EAGAIN => ResolveOutcome.Retry,
        _ => throw new KvmException(call, errno),
    };

    /// <summary>Reads one page-fault message; false when none is queued (EAGAIN, e.g. another reader took it) or for other events.</summary>
    public bool TryReadFault(out UffdFault fault)
    {
        UffdMsg msg;
        var n = Libc.Read(_raw, &msg, (nuint)sizeof(UffdMsg));
        if (n != sizeof(UffdMsg))
        {
            fault = default;
            if (n < 0)
            {
                var e = Marshal.GetLastPInvokeError();
                if (e is Errno.EAGAIN or Errno.EINTR) return false;
                throw new KvmException("read(userfaultfd)", e);
            }
            return false;
        }
        if (msg.Event != UffdConst.UFFD_EVENT_PAGEFAULT) { fault = default; return false; }
        fault = new UffdFault(msg.PagefaultAddress, (msg.PagefaultFlags & UffdConst.UFFD_PAGEFAULT_FLAG_WRITE) != 0,
            (msg.PagefaultFlags & UffdConst.UFFD_PAGEFAULT_FLAG_MINOR) != 0, (msg.PagefaultFlags & UffdConst.UFFD_PAGEFAULT_FLAG_WP) != 0,
            (int)msg.PagefaultPtid);
        return true;
    }

    /// <summary>
    /// Reads one message of any kind, for a handler that gets more than page faults (UFFD_EVENT_REMOVE). Call it after
    /// <see cref="WaitReadable"/> said a message is queued: <see cref="UffdEventKind.Closed"/> when the faulting process
    /// is gone (end of file), <see cref="UffdEventKind.None"/> when nothing was queued after all.
    /// </summary>
    public UffdEvent ReadEvent()
    {
        UffdMsg msg;
        var n = Libc.Read(_raw, &msg, (nuint)sizeof(UffdMsg));
        if (n == 0) return new UffdEvent(UffdEventKind.Closed, 0, 0, false);
        if (n < 0)
        {
            var e = Marshal.GetLastPInvokeError();
            if (e is Errno.EAGAIN or Errno.EINTR) return default;
            throw new KvmException("read(userfaultfd)", e);
        }
        if (n != sizeof(UffdMsg)) throw new KvmException("read(userfaultfd): short message", Errno.EINVAL);
        return msg.Event switch
        {
            UffdConst.UFFD_EVENT_PAGEFAULT => new UffdEvent(UffdEventKind.PageFault, msg.PagefaultAddress, msg.PagefaultAddress + 4096,
                (msg.PagefaultFlags & UffdConst.UFFD_PAGEFAULT_FLAG_WRITE) != 0),
            UffdConst.UFFD_EVENT_REMOVE => new UffdEvent(UffdEventKind.Remove, msg.RemoveStart, msg.RemoveEnd, false),
            _ => new UffdEvent(UffdEventKind.Other, 0, 0, false),
        };
    }

    /// <summary>Waits until a message is queued or <paramref name="stop"/> is signalled; false when stopped.</summary>
    public bool WaitReadable(StopEvent stop, int timeoutMs = -1)
    {
        var fds = stackalloc PollFd[2];
        fds[0] = new PollFd { Fd = _raw, Events = Libc.POLLIN };
        fds[1] = new PollFd { Fd = stop.RawFd, Events = Libc.POLLIN };
        while (true)
        {
            var r = Libc.Poll(fds, 2, timeoutMs);
            if (r < 0)
            {
                var e = Marshal.GetLastPInvokeError();
                if (e == Errno.EINTR) continue;
                throw new KvmException("poll(userfaultfd)", e);
            }
            if (fds[1].Revents != 0) return false;
            return fds[0].Revents != 0;
        }
    }

    public void Dispose()
    {
        if (_addedRef) { _addedRef = false; _fd.DangerousRelease(); }
        _fd.Dispose();
    }
}
