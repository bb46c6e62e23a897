using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

/// <summary>
/// A POSIX timer (timer_create) owned from the instant it exists; timer_delete is the only release. Not an fd: the
/// kernel lists a process's timers in /proc/self/timers. timer_t 0 is a valid timer (the process's first), so the
/// invalid value is -1, which glibc never returns for a SIGEV_SIGNAL or SIGEV_THREAD_ID timer.
/// </summary>
internal sealed class PosixTimerHandle : SafeHandle
{
    public PosixTimerHandle(nint timerId) : base(invalidHandleValue: -1, ownsHandle: true) => SetHandle(timerId);

    public override bool IsInvalid => handle == -1;

    /// <summary>The raw timer_t; only valid while this handle is alive.</summary>
    internal nint TimerId => handle;

    protected override bool ReleaseHandle() => Libc.TimerDelete(handle) == 0;
}
