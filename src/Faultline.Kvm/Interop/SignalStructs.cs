using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

// Layouts from include/uapi/asm-generic/siginfo.h and glibc's bits/types/sigevent_t.h (x86-64), checked with a C probe:
// sizeof(struct sigevent) 64, sigev_signo at 8, sigev_notify at 12, sigev_notify_thread_id (_sigev_un._tid) at 16;
// sizeof(struct itimerspec) 32; sizeof(siginfo_t) 128, si_code at 8, si_overrun at 20.

/// <summary>struct sigevent: only the SIGEV_SIGNAL / SIGEV_THREAD_ID arms are used (the rest of the union is padding).</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct Sigevent
{
    [FieldOffset(0)] public ulong SigevValue;
    [FieldOffset(8)] public int SigevSigno;
    [FieldOffset(12)] public int SigevNotify;
    [FieldOffset(16)] public int SigevNotifyThreadId;
}

/// <summary>struct itimerspec: the period (it_interval, zero for a one-shot timer) and the first expiry (it_value, zero disarms).</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct Itimerspec
{
    [FieldOffset(0)] public Timespec ItInterval;
    [FieldOffset(16)] public Timespec ItValue;
}

/// <summary>siginfo_t (128 bytes): the header, and si_overrun of the POSIX-timer arm of the union.</summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct Siginfo
{
    [FieldOffset(0)] public int SiSigno;
    [FieldOffset(4)] public int SiErrno;
    [FieldOffset(8)] public int SiCode;
    [FieldOffset(20)] public int SiOverrun;
}
