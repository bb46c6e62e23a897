using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

/// <summary>libc entry points. ioctl(2) is variadic in C; the (int, ulong, pointer) form is ABI-safe on x86-64 SysV.</summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(int fd, nuint request, nuint arg);

    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    internal static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    internal static partial int Munmap(void* addr, nuint length);

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    internal static partial int Madvise(void* addr, nuint length, int advice);

    /// <summary>
    /// MADV_POPULATE_WRITE in 32 MiB steps: one call over a whole guest (seconds for a GiB on this host) keeps its
    /// thread in the kernel, and a signal aimed at the process (Ctrl-C) waits for it. Returns 0 or -1 (errno set).
    /// </summary>
    internal static int PopulateWrite(void* addr, ulong length)
    {
        const ulong Step = 32UL << 20;
        for (ulong off = 0; off < length; off += Step)
            if (Madvise((byte*)addr + off, (nuint)Math.Min(Step, length - off), MADV_POPULATE_WRITE) != 0) return -1;
        return 0;
    }

    [LibraryImport(Lib, EntryPoint = "mincore", SetLastError = true)]
    internal static partial int Mincore(void* addr, nuint length, byte* vec);

    [LibraryImport(Lib, EntryPoint = "mprotect", SetLastError = true)]
    internal static partial int Mprotect(void* addr, nuint length, int prot);

    [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int MemfdCreate(string name, uint flags);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int Ftruncate(int fd, long length);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    internal static partial int Fallocate(int fd, int mode, long offset, long len);

    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)]
    internal static partial nint Pwrite(int fd, void* buf, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    internal static partial nint Pread(int fd, void* buf, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    internal static partial nint Read(int fd, void* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    internal static partial nint Write(int fd, void* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "sendmsg", SetLastError = true)]
    internal static partial nint Sendmsg(int sockfd, Msghdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    internal static partial nint Recvmsg(int sockfd, Msghdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    internal static partial int EventFd(uint initval, int flags);

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    internal static partial int Poll(PollFd* fds, nuint nfds, int timeout);

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    internal static partial long Syscall(long number, long a1, long a2, long a3);

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    internal static partial long Syscall(long number, long a1, long a2, long a3, long a4);

    [LibraryImport(Lib, EntryPoint = "setpriority", SetLastError = true)]
    internal static partial int SetPriority(int which, int who, int prio);

    /// <summary>sched_setscheduler(2); with a thread id as pid it sets that one thread. <paramref name="param"/>: struct sched_param (one int).</summary>
    [LibraryImport(Lib, EntryPoint = "sched_setscheduler", SetLastError = true)]
    internal static partial int SchedSetScheduler(int pid, int policy, int* param);

    /// <summary>clock_gettime(2); <paramref name="ts"/>: struct timespec (two longs).</summary>
    [LibraryImport(Lib, EntryPoint = "clock_gettime")]
    internal static partial int ClockGettime(int clock, long* ts);

    /// <summary>clock_nanosleep(2); returns the error number (not -1/errno). <paramref name="ts"/>: struct timespec.</summary>
    [LibraryImport(Lib, EntryPoint = "clock_nanosleep")]
    internal static partial int ClockNanosleep(int clock, int flags, long* ts, long* rem);

    [LibraryImport(Lib, EntryPoint = "gettid")]
    internal static partial int Gettid();

    [LibraryImport(Lib, EntryPoint = "getpid")]
    internal static partial int Getpid();

    [LibraryImport(Lib, EntryPoint = "pthread_sigmask")]
    internal static partial int PthreadSigmask(int how, ulong* set, ulong* oldset);

    [LibraryImport(Lib, EntryPoint = "sigtimedwait", SetLastError = true)]
    internal static partial int Sigtimedwait(ulong* set, void* info, Timespec* timeout);

    // POSIX timers (libc.so.6 since glibc 2.34). timer_t is an opaque pointer-sized value; for a SIGEV_SIGNAL or
    // SIGEV_THREAD_ID timer glibc stores the kernel's timer id in it, and the first timer of a process has id 0.
    [LibraryImport(Lib, EntryPoint = "timer_create", SetLastError = true)]
    internal static partial int TimerCreate(int clockid, Sigevent* sevp, nint* timerid);

    [LibraryImport(Lib, EntryPoint = "timer_settime", SetLastError = true)]
    internal static partial int TimerSettime(nint timerid, int flags, Itimerspec* newValue, Itimerspec* oldValue);

    [LibraryImport(Lib, EntryPoint = "timer_delete", SetLastError = true)]
    internal static partial int TimerDelete(nint timerid);

    [LibraryImport(Lib, EntryPoint = "__libc_current_sigrtmin")]
    internal static partial int CurrentSigrtmin();

    [LibraryImport(Lib, EntryPoint = "sysconf")]
    internal static partial long Sysconf(int name);

    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)]
    private static partial int Prctl(int option, nuint arg2, void* arg3, nuint arg4, byte* arg5);

    /// <summary>prctl(PR_SET_TIMERSLACK, ns) for the calling thread: how late the kernel may wake its timed sleeps.</summary>
    internal static int SetTimerSlack(ulong ns) => Prctl(PR_SET_TIMERSLACK, (nuint)ns, null, 0, null);

    /// <summary>PR_SET_VMA_ANON_NAME (Linux 5.17+, best effort): names an anonymous mapping in /proc/self/maps.</summary>
    internal static void NameAnonymousMapping(void* addr, nuint length, string name)
    {
        const int PR_SET_VMA = 0x53564d41;
        Span<byte> z = stackalloc byte[64];
        var n = System.Text.Encoding.ASCII.GetBytes(name.AsSpan(0, Math.Min(name.Length, 63)), z);
        z[n] = 0;
        fixed (byte* p = z) Prctl(PR_SET_VMA, 0, addr, length, p);
    }

    internal const int O_RDWR = 2, O_CLOEXEC = 0x80000, O_NONBLOCK = 0x800;
    internal const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    internal const int MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    internal const int MADV_DONTNEED = 4, MADV_REMOVE = 9, MADV_HUGEPAGE = 14, MADV_NOHUGEPAGE = 15, MADV_POPULATE_READ = 22, MADV_POPULATE_WRITE = 23;
    internal const uint MFD_CLOEXEC = 1;
    internal const int EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;
    internal const short POLLIN = 1, POLLERR = 8, POLLHUP = 0x10;
    internal const int MSG_NOSIGNAL = 0x4000;        // a closed peer is EPIPE, not SIGPIPE
    internal const int UIO_MAXIOV = 1024;            // the most iovecs one sendmsg/writev takes (IOV_MAX)
    internal const int SIG_BLOCK = 0, SIG_UNBLOCK = 1, SIG_SETMASK = 2;
    internal const long SYS_userfaultfd = 323, SYS_tgkill = 234, SYS_sched_setattr = 314, SYS_sched_getattr = 315;
    internal const int SC_PAGESIZE = 30;
    internal const int CLOCK_MONOTONIC = 1, CLOCK_THREAD_CPUTIME_ID = 3, TIMER_ABSTIME = 1;
    internal const int PR_SET_TIMERSLACK = 29;
    internal const int PRIO_PROCESS = 0;             // setpriority: with a thread id as who, that one thread
    internal const int SCHED_OTHER = 0, SCHED_FIFO = 1;
    internal const int SIGEV_THREAD_ID = 4;          // uapi/asm-generic/siginfo.h: deliver to the thread in sigev_notify_thread_id
    internal const int SI_TIMER = -2, SI_TKILL = -6;  // siginfo.si_code: a POSIX timer's expiry, tgkill
    internal static readonly void* MAP_FAILED = (void*)-1;
}

[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int Fd;
    public short Events;
    public short Revents;
}

[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long Sec;
    public long Nsec;
}
