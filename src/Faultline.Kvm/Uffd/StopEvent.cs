using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Uffd;

/// <summary>An eventfd that blocking loops poll next to their fd (the selftests' pipe): signalled once, readable forever.</summary>
public sealed unsafe class StopEvent : IDisposable
{
    private readonly EventFdHandle _fd;
    private bool _addedRef;
    internal int RawFd { get; }

    public StopEvent()
    {
        _fd = new EventFdHandle(Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK));
        if (_fd.IsInvalid) throw new KvmException("eventfd", Marshal.GetLastPInvokeError());
        _fd.DangerousAddRef(ref _addedRef);
        RawFd = _fd.Fd;
    }

    public bool IsSet { get; private set; }

    public void Set()
    {
        if (IsSet) return;
        IsSet = true;
        ulong one = 1;
        Libc.Write(RawFd, &one, 8);
    }

    public void Dispose()
    {
        if (_addedRef) { _addedRef = false; _fd.DangerousRelease(); }
        _fd.Dispose();
    }
}
