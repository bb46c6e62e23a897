using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Threads;

/// <summary>
/// One thread's sleep until another thread has work for it, on an eventfd: no managed lock, no spinning, and a
/// signaller that finds nobody asleep makes no system call. The sleeper arms, checks its condition once more, then
/// waits; a signaller publishes its work, then signals:
/// <code>
/// sleeper:   wake.Arm(); if (work ready) wake.Disarm(); else wake.Wait();
/// signaller: publish work; wake.Signal();
/// </code>
/// Arm and Signal are full fences, so either the sleeper's check sees the work or the signaller sees the sleeper armed
/// and writes the eventfd (which then ends the Wait, or the next one: a Wait may return with nothing new; callers check
/// again). One sleeper at a time; any number of signallers.
/// </summary>
public sealed unsafe class WakeEvent : IDisposable
{
    private readonly EventFdHandle _fd;
    private bool _addedRef;
    private readonly int _raw;
    private int _armed;
    private long _writes;

    public WakeEvent()
    {
        _fd = new EventFdHandle(Libc.EventFd(0, Libc.EFD_CLOEXEC));
        if (_fd.IsInvalid) throw new KvmException("eventfd", Marshal.GetLastPInvokeError());
        _fd.DangerousAddRef(ref _addedRef);
        _raw = _fd.Fd;
    }

    /// <summary>Eventfd writes made (signals that found the sleeper armed, and <see cref="SignalAlways"/>).</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>The sleeper is about to check its condition and sleep: signals from now on wake it.</summary>
    public void Arm() => Interlocked.Exchange(ref _armed, 1);

    /// <summary>The sleeper found work after arming and will not sleep.</summary>
    public void Disarm() => Volatile.Write(ref _armed, 0);

    /// <summary>Sleeps until a signal (one that came after <see cref="Arm"/>, or one left over from before).</summary>
    public void Wait()
    {
        ulong count;
        while (Libc.Read(_raw, &count, 8) < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Errno.EINTR) throw new KvmException("read(eventfd)", errno);
        }
        Volatile.Write(ref _armed, 0);
    }

    /// <summary>Wakes the sleeper if it is armed; otherwise costs a fence and a load.</summary>
    public void Signal()
    {
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _armed) == 1 && Interlocked.CompareExchange(ref _armed, 0, 1) == 1) Write();
    }

    /// <summary>Wakes the sleeper now or at its next <see cref="Wait"/>, armed or not (stopping).</summary>
    public void SignalAlways() => Write();

    private void Write()
    {
        ulong one = 1;
        Libc.Write(_raw, &one, 8);
        Interlocked.Increment(ref _writes);
    }

    public void Dispose()
    {
        if (_addedRef) { _addedRef = false; _fd.DangerousRelease(); }
        _fd.Dispose();
    }
}
