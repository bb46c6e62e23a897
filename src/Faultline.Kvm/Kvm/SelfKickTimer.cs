using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm;

/// <summary>
/// A periodic POSIX timer that kicks one vCPU thread out of KVM_RUN from that thread's own CPU: timer_create on
/// CLOCK_MONOTONIC with SIGEV_THREAD_ID naming the vCPU thread and <see cref="Vcpu.KickSignal"/> as its signal. Each
/// expiry ends KVM_RUN with EINTR exactly as <see cref="Vcpu.Kick"/> does (<see cref="VcpuExitKind.Interrupted"/>;
/// <see cref="Vcpu.SelfKicksDelivered"/> counts them apart from kicks).
/// <para>Why: on a nested host a cross-CPU kick (tgkill → IPI) often waits for the target CPU's next host tick
/// (HOST.md, "Interrupt and NMI delivery"), while a timer interrupt on the vCPU's own CPU is taken at once. The timer is
/// armed by the vCPU thread itself, so its hrtimer is queued on the CPU that thread runs on, and the kernel re-arms
/// a periodic timer when its signal is dequeued (the drain after EINTR, on the same thread). A timer's signal is queued
/// at most once (later expiries only count as overruns), so nothing piles up while the thread is outside KVM_RUN.</para>
/// Created, armed and disarmed by the vCPU's thread only; <see cref="Dispose"/> (timer_delete) from any thread.
/// </summary>
public sealed unsafe class SelfKickTimer : IDisposable
{
    private readonly PosixTimerHandle _timer;
    private readonly nint _timerId;
    private readonly int _owner;
    private bool _addedRef;
    private int _disposed;

    private SelfKickTimer(PosixTimerHandle timer, int owner)
    {
        _timer = timer;
        _owner = owner;
        _timer.DangerousAddRef(ref _addedRef);
        _timerId = _timer.TimerId;
    }

    /// <summary>The period it is armed with; <see cref="TimeSpan.Zero"/> while disarmed.</summary>
    public TimeSpan Period { get; private set; }

    public bool IsArmed => Period > TimeSpan.Zero;

    /// <summary>
    /// Creates a disarmed timer whose expiries signal the calling thread, which must be <paramref name="vcpu"/>'s thread
    /// (after <see cref="Vcpu.BindToCurrentThread"/>: the kick signal is blocked here and let through only inside KVM_RUN).
    /// </summary>
    public static SelfKickTimer CreateForCurrentThread(Vcpu vcpu)
    {
        var tid = Libc.Gettid();
        if (vcpu.ThreadId != tid)
            throw new InvalidOperationException($"a self-kick timer is created on vCPU {vcpu.Id}'s own thread (bound: {vcpu.ThreadId}, caller: {tid})");
        var ev = new Sigevent { SigevSigno = Vcpu.KickSignal, SigevNotify = Libc.SIGEV_THREAD_ID, SigevNotifyThreadId = tid };
        nint id = -1;
        var r = Libc.TimerCreate(Libc.CLOCK_MONOTONIC, &ev, &id);
        var errno = Marshal.GetLastPInvokeError();
        var handle = new PosixTimerHandle(r == 0 ? id : -1);   // owned before anything can throw
        if (handle.IsInvalid) throw new KvmException("timer_create(CLOCK_MONOTONIC, SIGEV_THREAD_ID)", errno);
        return new SelfKickTimer(handle, Environment.CurrentManagedThreadId);
    }

    /// <summary>Starts (or restarts) the timer: first expiry one <paramref name="period"/> from now, then every period. Allocation-free.</summary>
    public void Arm(TimeSpan period)
    {
        if (period <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(period), period, "a self-kick period must be positive");
        var ns = (long)(period.TotalMicroseconds * 1000);
        var t = new Timespec { Sec = ns / 1_000_000_000, Nsec = ns % 1_000_000_000 };
        Set(new Itimerspec { ItInterval = t, ItValue = t });
        Period = period;
    }

    /// <summary>Stops the timer. A signal of an expiry already queued is dropped by the kernel when it is dequeued, or ends one KVM_RUN.</summary>
    public void Disarm()
    {
        if (!IsArmed) return;
        Set(default);
        Period = TimeSpan.Zero;
    }

    private void Set(Itimerspec spec)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (Environment.CurrentManagedThreadId != _owner)
            throw new InvalidOperationException("a self-kick timer is armed and disarmed by the thread that created it (its hrtimer lives on that thread's CPU)");
        if (Libc.TimerSettime(_timerId, 0, &spec, null) != 0) throw new KvmException("timer_settime", Marshal.GetLastPInvokeError());
    }

    /// <summary>timer_delete: stops and frees the timer.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Period = TimeSpan.Zero;
        if (_addedRef) { _addedRef = false; _timer.DangerousRelease(); }
        _timer.Dispose();
    }
}
