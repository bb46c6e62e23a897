using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;

namespace Faultline.Kvm;

/// <summary>
/// A vCPU: KVM_RUN and its shared kvm_run page, register access and a thread-safe <see cref="Kick"/>.
/// <see cref="Run"/> must be called from one thread, after <see cref="BindToCurrentThread"/>.
/// </summary>
public sealed unsafe class Vcpu : IDisposable
{
    private readonly VcpuFd _fd;
    private KvmRun* _run;
    private readonly int _mmapSize;
    private int _rawFd = -1;
    private volatile int _tid;
    private volatile int _managedThread;   // Environment.CurrentManagedThreadId of the bound thread, 0 when unbound
    private int _kickQueued;   // 1 from a kick's tgkill until the vCPU thread has drained it: at most one kick signal queued
    private int _disposed;
    private bool _addedRef;
    private readonly ulong _syncCap;

    /// <summary>
    /// The signal that kicks a vCPU thread out of KVM_RUN (blocked on that thread outside KVM_RUN, QEMU's way): SIGUSR1,
    /// QEMU's SIG_IPI, which the .NET runtime does not use. Not a real-time signal: RT signals queue one entry per send
    /// against the user's RLIMIT_SIGPENDING, shared by all of that user's processes, and once it is full tgkill fails
    /// with EAGAIN and the kick is lost (seen here: one process kicking a vCPU thread outside KVM_RUN in a loop queued
    /// ~96k signals and every other process's kicks vanished). A standard signal is pending at most once per thread
    /// and is delivered even when the queue is full.
    /// </summary>
    public static readonly int KickSignal = 10;

    public Vm Vm { get; }
    public int Id { get; }
    /// <summary>Host thread id of the thread that runs this vCPU (0 before <see cref="BindToCurrentThread"/>).</summary>
    public int ThreadId => _tid;
    /// <summary>Kick signals (tgkill, <see cref="Kick"/>) this vCPU's thread has drained after an Interrupted exit.</summary>
    public long KicksDelivered { get; private set; }
    /// <summary>Expiries of a <see cref="SelfKickTimer"/> this vCPU's thread has drained after an Interrupted exit.</summary>
    public long SelfKicksDelivered { get; private set; }

    internal Vcpu(Vm vm, int id, VcpuFd fd, KvmRun* run, int mmapSize, ulong syncRegsCap)
    {
        Vm = vm; Id = id; _fd = fd; _run = run; _mmapSize = mmapSize;
        // KVM_CAP_SYNC_REGS: general registers arrive in kvm_run with every exit, saving a ~5 µs KVM_GET_REGS (HOST.md).
        // Special registers are not synced by default: storing them costs KVM on every exit, and CR3 rarely changes.
        _syncCap = syncRegsCap;
        _run->KvmValidRegs = syncRegsCap & KvmConst.KVM_SYNC_X86_REGS;
    }

    /// <summary>
    /// Makes the calling thread this vCPU's thread: blocks <see cref="KickSignal"/> here, lets KVM_RUN take it
    /// (KVM_SET_SIGNAL_MASK), records the thread id for <see cref="Kick"/>.
    /// </summary>
    public void BindToCurrentThread()
    {
        var set = stackalloc ulong[16];
        var old = stackalloc ulong[16];
        set[0] = 1UL << (KickSignal - 1);
        if (Libc.PthreadSigmask(Libc.SIG_BLOCK, set, old) != 0) throw new KvmException("pthread_sigmask", Errno.EINVAL);
        var mask = new KvmSignalMask { Len = 8, Sigset = old[0] & ~(1UL << (KickSignal - 1)) };
        if (!_addedRef) { _fd.DangerousAddRef(ref _addedRef); _rawFd = _fd.Fd; }
        if (Libc.Ioctl(_rawFd, KvmIoctls.KVM_SET_SIGNAL_MASK, &mask) != 0) throw new KvmException("KVM_SET_SIGNAL_MASK", Marshal.GetLastPInvokeError());
        Volatile.Write(ref _kickQueued, 0);   // a kick queued on a previous thread died with it, or is spurious here
        _tid = Libc.Gettid();
        _managedThread = Environment.CurrentManagedThreadId;
    }

    /// <summary>Called by the vCPU thread when it stops running this vCPU: no kick may target its thread id afterwards.</summary>
    public void UnbindThread()
    {
        _tid = 0;
        _managedThread = 0;
        Volatile.Write(ref _kickQueued, 0);
    }

    /// <summary>
    /// Makes a KVM_RUN on this vCPU return <see cref="VcpuExitKind.Interrupted"/> promptly, from any thread.
    /// A kick sent while the vCPU is outside KVM_RUN stays pending and ends the next KVM_RUN at once.
    /// </summary>
    public void Kick() => TryKick();

    /// <summary>
    /// <see cref="Kick"/>, saying whether a kick is on its way: false when no thread is bound, or when tgkill failed
    /// (errno in Marshal.GetLastPInvokeError(); EAGAIN: the user's queue of pending real-time signals, RLIMIT_SIGPENDING,
    /// is full). Real-time signals queue one entry per send, counted per user across processes, so a kick is only sent
    /// when none is queued: one not yet drained already ends this or the next KVM_RUN. Without that, kicks at a thread
    /// that does not drain them (outside KVM_RUN, or blocked where signals don't reach, HOST.md) fill the user's queue,
    /// and every kick of every process of that user fails.
    /// </summary>
    public bool TryKick()
    {
        var tid = _tid;
        if (tid == 0 || _run == null) return false;
        if (Interlocked.Exchange(ref _kickQueued, 1) != 0) return true;
        if (Libc.Syscall(Libc.SYS_tgkill, Libc.Getpid(), tid, KickSignal) == 0) return true;
        Volatile.Write(ref _kickQueued, 0);
        return false;
    }

    /// <summary>KVM_RUN once and decode the exit. Allocation-free.</summary>
    public VcpuExit Run()
    {
        var run = _run;
        run->ExitReason = KvmConst.KVM_EXIT_UNKNOWN; // exit_reason may be stale on EFAULT paths that don't fill it
        if (Libc.Ioctl(_rawFd, KvmIoctls.KVM_RUN, 0) < 0)
        {
            var e = Marshal.GetLastPInvokeError();
            if (e == Errno.EINTR || e == Errno.EAGAIN)
            {
                DrainKicks();
                run->ImmediateExit = 0;
                return new VcpuExit { Kind = VcpuExitKind.Interrupted, RawReason = KvmConst.KVM_EXIT_INTR };
            }
            if (e == Errno.EFAULT || e == Errno.EHWPOISON)
            {
                if (run->ExitReason == KvmConst.KVM_EXIT_MEMORY_FAULT)
                    return new VcpuExit
                    {
                        Kind = VcpuExitKind.MemoryFault, RawReason = run->ExitReason, Form = MemoryFaultForm.MemoryFaultExit, HasAddress = true,
                        Address = new GuestAddress(run->MemoryFault.Gpa), Size = (uint)run->MemoryFault.Size, Flags = run->MemoryFault.Flags,
                    };
                return new VcpuExit { Kind = VcpuExitKind.MemoryFault, RawReason = run->ExitReason, Form = MemoryFaultForm.BareEfault };
            }
            throw new KvmException($"KVM_RUN(vcpu {Id})", e);
        }
        var reason = run->ExitReason;
        switch (reason)
        {
            case KvmConst.KVM_EXIT_HLT: return new VcpuExit { Kind = VcpuExitKind.Hlt, RawReason = reason };
            case KvmConst.KVM_EXIT_IO:
            {
                var io = run->Io;
                var p = (byte*)run + io.DataOffset;
                ulong data = io.Size switch { 1 => *p, 2 => *(ushort*)p, _ => *(uint*)p };
                return new VcpuExit
                {
                    Kind = io.Direction == KvmConst.KVM_EXIT_IO_OUT ? VcpuExitKind.IoOut : VcpuExitKind.IoIn, RawReason = reason,
                    Port = io.Port, Size = io.Size, Count = io.Count, Data = data, IsWrite = io.Direction == KvmConst.KVM_EXIT_IO_OUT,
                };
            }
            case KvmConst.KVM_EXIT_MMIO:
            {
                var gpa = new GuestAddress(run->Mmio.PhysAddr);
                var len = run->Mmio.Len;
                ulong data = 0;
                if (run->Mmio.IsWrite != 0) Buffer.MemoryCopy(run->Mmio.Data, &data, 8, Math.Min(len, 8u));
                var inRam = Vm.SlotOf(gpa) is not null;
                return new VcpuExit
                {
                    Kind = inRam ? VcpuExitKind.MemoryFault : VcpuExitKind.Mmio, Form = inRam ? MemoryFaultForm.EmulatedMmio : MemoryFaultForm.None,
                    RawReason = reason, Address = gpa, HasAddress = true, Size = len, IsWrite = run->Mmio.IsWrite != 0, Data = data,
                };
            }
            case KvmConst.KVM_EXIT_SHUTDOWN: return new VcpuExit { Kind = VcpuExitKind.Shutdown, RawReason = reason };
            case KvmConst.KVM_EXIT_INTERNAL_ERROR: return new VcpuExit { Kind = VcpuExitKind.InternalError, RawReason = reason, Flags = run->Internal.Suberror };
            case KvmConst.KVM_EXIT_FAIL_ENTRY: return new VcpuExit { Kind = VcpuExitKind.FailEntry, RawReason = reason, Flags = run->HardwareExitReason };
            case KvmConst.KVM_EXIT_SYSTEM_EVENT: return new VcpuExit { Kind = VcpuExitKind.SystemEvent, RawReason = reason, Flags = run->SystemEvent.Type };
            case KvmConst.KVM_EXIT_X86_RDMSR: return new VcpuExit { Kind = VcpuExitKind.MsrRead, RawReason = reason, Flags = run->Msr.Index };
            case KvmConst.KVM_EXIT_X86_WRMSR: return new VcpuExit { Kind = VcpuExitKind.MsrWrite, RawReason = reason, Flags = run->Msr.Index, Data = run->Msr.Data, IsWrite = true };
            case KvmConst.KVM_EXIT_IRQ_WINDOW_OPEN: return new VcpuExit { Kind = VcpuExitKind.IrqWindowOpen, RawReason = reason };
            case KvmConst.KVM_EXIT_EXCEPTION: return new VcpuExit { Kind = VcpuExitKind.Exception, RawReason = reason, Flags = run->HardwareExitReason };
            case KvmConst.KVM_EXIT_DEBUG: return new VcpuExit { Kind = VcpuExitKind.Debug, RawReason = reason };
            case KvmConst.KVM_EXIT_HYPERCALL: return new VcpuExit { Kind = VcpuExitKind.Hypercall, RawReason = reason };
            case KvmConst.KVM_EXIT_INTR: return new VcpuExit { Kind = VcpuExitKind.Interrupted, RawReason = reason };
            default: return new VcpuExit { Kind = VcpuExitKind.Unknown, RawReason = reason, Flags = run->HardwareExitReason };
        }
    }

    private void DrainKicks()
    {
        var set = stackalloc ulong[16];
        set[0] = 1UL << (KickSignal - 1);
        var zero = new Timespec();
        Siginfo info;
        // a kick (SI_TKILL) and a self-kick timer's expiry (SI_TIMER) may both be pending: the timer's signal has its own
        // queue entry, and dequeuing it is what re-arms a periodic timer. A kick sent while the timer's signal is pending
        // merges into it (a standard signal is pending at most once): this one exit answers both.
        while (Libc.Sigtimedwait(set, &info, &zero) > 0)
        {
            if (info.SiCode == Libc.SI_TIMER) SelfKicksDelivered++;
            else KicksDelivered++;
        }
        // after the drain: a kick coalesced into the one just drained is answered by this Interrupted exit, and a kick
        // from now on sends a new signal
        Volatile.Write(ref _kickQueued, 0);
    }

    /// <summary>Supplies the value of a pending MMIO read (or an emulated-MMIO memory-fault read) before the next <see cref="Run"/>.</summary>
    public void CompleteMmioRead(ulong value)
    {
        var len = Math.Min(_run->Mmio.Len, 8u);
        Buffer.MemoryCopy(&value, _run->Mmio.Data, 8, len);
    }

    /// <summary>Supplies the bytes of a pending MMIO read from memory.</summary>
    public void CompleteMmioRead(ReadOnlySpan<byte> bytes)
    {
        var len = (int)Math.Min(_run->Mmio.Len, 8u);
        bytes[..len].CopyTo(new Span<byte>(_run->Mmio.Data, len));
    }

    /// <summary>Supplies the value of a pending port IN.</summary>
    public void CompleteIoIn(uint value)
    {
        var p = (byte*)_run + _run->Io.DataOffset;
        switch (_run->Io.Size) { case 1: *p = (byte)value; break; case 2: *(ushort*)p = (ushort)value; break; default: *(uint*)p = value; break; }
    }

    /// <summary>Completes a pending MSR exit (error 0 = success; for a read, <paramref name="data"/> is the value).</summary>
    public void CompleteMsr(ulong data, bool error = false) { _run->Msr.Data = data; _run->Msr.Error = error ? (byte)1 : (byte)0; }

    /// <summary>Sets kvm_run.immediate_exit: the next KVM_RUN completes pending I/O and returns EINTR before the guest runs.</summary>
    public bool ImmediateExit { get => _run->ImmediateExit != 0; set => _run->ImmediateExit = value ? (byte)1 : (byte)0; }
    public bool RequestInterruptWindow { get => _run->RequestInterruptWindow != 0; set => _run->RequestInterruptWindow = value ? (byte)1 : (byte)0; }
    public bool ReadyForInterruptInjection => _run->ReadyForInterruptInjection != 0;
    public bool InterruptFlag => _run->IfFlag != 0;

    /// <summary>Whether <see cref="SyncedRegs"/> is refreshed by KVM on every exit (KVM_CAP_SYNC_REGS).</summary>
    public bool HasSyncedRegs => (_run->KvmValidRegs & KvmConst.KVM_SYNC_X86_REGS) != 0;
    public bool HasSyncedSregs => (_run->KvmValidRegs & KvmConst.KVM_SYNC_X86_SREGS) != 0;

    /// <summary>Asks KVM to also store the special registers into kvm_run on every exit (when the capability allows).</summary>
    public bool SyncSpecialRegisters
    {
        get => HasSyncedSregs;
        set => _run->KvmValidRegs = value ? _syncCap & (KvmConst.KVM_SYNC_X86_REGS | KvmConst.KVM_SYNC_X86_SREGS) : _syncCap & KvmConst.KVM_SYNC_X86_REGS;
    }

    /// <summary>General registers as of the last exit, without an ioctl (valid when <see cref="HasSyncedRegs"/>).</summary>
    public ref readonly KvmRegs SyncedRegs => ref _run->SyncRegs;
    public ref readonly KvmSregs SyncedSregs => ref _run->SyncSregs;

    /// <summary>
    /// Sets the registers for the next KVM_RUN without an ioctl: into kvm_run's synced copy, marked dirty
    /// (kvm_dirty_regs), which KVM applies before it completes pending I/O and enters. Needs <see cref="HasSyncedRegs"/>.
    /// </summary>
    public void WriteSyncedRegs(in KvmRegs regs)
    {
        if (!HasSyncedRegs) throw new InvalidOperationException("KVM_CAP_SYNC_REGS is not in use on this vCPU");
        _run->SyncRegs = regs;
        _run->KvmDirtyRegs |= KvmConst.KVM_SYNC_X86_REGS;
    }

    /// <summary>The special registers' twin of <see cref="WriteSyncedRegs"/>. Needs <see cref="HasSyncedSregs"/>.</summary>
    public void WriteSyncedSregs(in KvmSregs sregs)
    {
        if (!HasSyncedSregs) throw new InvalidOperationException("synced special registers are not on (SyncSpecialRegisters)");
        _run->SyncSregs = sregs;
        _run->KvmDirtyRegs |= KvmConst.KVM_SYNC_X86_SREGS;
    }

    /// <summary>The registers the guest resumes with: synced ones when available, else KVM_GET_REGS.</summary>
    public KvmRegs CurrentRegs() => HasSyncedRegs ? _run->SyncRegs : GetRegs();

    public KvmRegs GetRegs()
    {
        KvmRegs r;
        Check(Libc.Ioctl(Fd, KvmIoctls.KVM_GET_REGS, &r), "KVM_GET_REGS");
        return r;
    }

    public void SetRegs(in KvmRegs regs)
    {
        fixed (KvmRegs* p = &regs) Check(Libc.Ioctl(Fd, KvmIoctls.KVM_SET_REGS, p), "KVM_SET_REGS");
        if (HasSyncedRegs) _run->SyncRegs = regs; // keep the synced copy coherent until the next exit
    }

    public KvmSregs GetSregs()
    {
        KvmSregs s;
        Check(Libc.Ioctl(Fd, KvmIoctls.KVM_GET_SREGS, &s), "KVM_GET_SREGS");
        return s;
    }

    public void SetSregs(in KvmSregs sregs)
    {
        fixed (KvmSregs* p = &sregs) Check(Libc.Ioctl(Fd, KvmIoctls.KVM_SET_SREGS, p), "KVM_SET_SREGS");
        if (HasSyncedSregs) _run->SyncSregs = sregs;
    }

    public KvmVcpuEvents GetEvents()
    {
        KvmVcpuEvents e;
        Check(Libc.Ioctl(Fd, KvmIoctls.KVM_GET_VCPU_EVENTS, &e), "KVM_GET_VCPU_EVENTS");
        return e;
    }

    public void SetEvents(in KvmVcpuEvents events)
    {
        fixed (KvmVcpuEvents* p = &events) Check(Libc.Ioctl(Fd, KvmIoctls.KVM_SET_VCPU_EVENTS, p), "KVM_SET_VCPU_EVENTS");
    }

    /// <summary>
    /// KVM_INTERRUPT (no in-kernel irqchip): queues an external interrupt for the next entry. Only from this vCPU's thread
    /// (from another it blocks while KVM_RUN runs, HOST.md), and only when the last exit said
    /// <see cref="ReadyForInterruptInjection"/> and <see cref="InterruptFlag"/>; else request an interrupt window first.
    /// </summary>
    public void Interrupt(byte vector)
    {
        RequireOwnThread("KVM_INTERRUPT");
        var irq = new KvmInterrupt { Irq = vector };
        Check(Libc.Ioctl(Fd, KvmIoctls.KVM_INTERRUPT, &irq), "KVM_INTERRUPT");
    }

    /// <summary>
    /// KVM_SET_VCPU_EVENTS with one exception for the next entry, and nothing else: one ioctl (HOST.md, "Exception
    /// injection"). With <see cref="Vm.ExceptionPayloadEnabled"/> it is queued pending and <paramref name="payload"/> (a
    /// #PF's CR2) is applied by KVM at delivery (KVM_VCPUEVENT_VALID_PAYLOAD); without it, it is queued injected and may
    /// carry no payload. The call also clears any injected interrupt or NMI and the NMI mask, so use it only when no
    /// event is in flight (the guest ran since the last injection); otherwise <see cref="TryInjectExceptionPreserving"/>.
    /// Only from this vCPU's thread.
    /// </summary>
    public void InjectException(byte vector, uint? errorCode = null, ulong? payload = null)
    {
        RequireOwnThread("KVM_SET_VCPU_EVENTS");
        var e = new KvmVcpuEvents();
        SetException(ref e, vector, errorCode, payload);
        SetEvents(e);
    }

    /// <summary>
    /// <see cref="InjectException"/> that checks first and keeps every other event: KVM_GET_VCPU_EVENTS, then
    /// KVM_SET_VCPU_EVENTS with the exception added (two ioctls). False, and nothing changed, when an event is still in
    /// flight (<see cref="EventInFlight(in KvmVcpuEvents)"/>): the vCPU holds one exception at a time, and an exception
    /// queued behind an injected interrupt would be delivered first, with the interrupt then landing in its handler.
    /// </summary>
    public bool TryInjectExceptionPreserving(byte vector, uint? errorCode = null, ulong? payload = null)
    {
        RequireOwnThread("KVM_SET_VCPU_EVENTS");
        var e = GetEvents();
        if (EventInFlight(e)) return false;
        SetException(ref e, vector, errorCode, payload);
        SetEvents(e);
        return true;
    }

    /// <summary>KVM_GET_VCPU_EVENTS: whether an exception, interrupt or NMI is still pending or being delivered.</summary>
    public bool HasEventInFlight() => EventInFlight(GetEvents());

    /// <summary>An exception pending or injected, or an interrupt or NMI injected: KVM delivers it at the next entry that reaches the guest.</summary>
    public static bool EventInFlight(in KvmVcpuEvents e) =>
        e.ExceptionPending != 0 || e.ExceptionInjected != 0 || e.InterruptInjected != 0 || e.NmiInjected != 0;

    private void SetException(ref KvmVcpuEvents e, byte vector, uint? errorCode, ulong? payload)
    {
        if (vector > 31) throw new ArgumentOutOfRangeException(nameof(vector), vector, "exception vectors are 0..31");
        e.ExceptionNr = vector;
        e.ExceptionHasErrorCode = errorCode.HasValue ? (byte)1 : (byte)0;
        e.ExceptionErrorCode = errorCode.GetValueOrDefault();
        if (Vm.ExceptionPayloadEnabled)
        {
            // pending, not injected: KVM delivers it through its own checks and only then writes the payload (CR2)
            e.Flags |= KvmConst.KVM_VCPUEVENT_VALID_PAYLOAD;
            e.ExceptionPending = 1;
            e.ExceptionInjected = 0;
            e.ExceptionHasPayload = payload.HasValue ? (byte)1 : (byte)0;
            e.ExceptionPayload = payload.GetValueOrDefault();
        }
        else
        {
            // without the capability KVM zeroes exception.pending and the payload: only an injected exception gets through
            if (payload.HasValue) throw new InvalidOperationException("an exception payload needs Vm.EnableExceptionPayload() first");
            e.Flags &= ~KvmConst.KVM_VCPUEVENT_VALID_PAYLOAD;
            e.ExceptionInjected = 1;
        }
    }

    /// <summary>A vCPU ioctl from a thread other than the bound one waits for KVM_RUN to return (the vCPU mutex): a bug, not a delay.</summary>
    private void RequireOwnThread(string call)
    {
        var owner = _managedThread;
        if (owner != 0 && owner != Environment.CurrentManagedThreadId)
            throw new InvalidOperationException($"{call}(vcpu {Id}) must be issued on the vCPU's own thread: from another it blocks while KVM_RUN runs");
    }

    private int Fd => _rawFd >= 0 ? _rawFd : _fd.Fd;

    private void Check(int r, string call)
    {
        if (r < 0) throw new KvmException($"{call}(vcpu {Id})", Marshal.GetLastPInvokeError());
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _tid = 0;
        var run = _run;
        _run = null;
        if (run != null) Libc.Munmap(run, (nuint)_mmapSize);
        if (_addedRef) _fd.DangerousRelease();
        _fd.Dispose();
    }
}
