using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Uffd;

namespace Faultline.Kvm.Tests;

/// <summary>
/// Every interop struct's size and the offsets of the fields the code reads or writes, and every ioctl number, against
/// the kernel's values as written in KERNEL-FACTS.md (§1.1, 1.3, 1.5, 1.6, 5). Offsets are measured in the struct as the
/// runtime lays it out (pointer arithmetic), and sizes both as the runtime sees them and as marshalling does.
/// </summary>
public sealed unsafe class AbiLayoutTests
{
    /// <summary>Collects every mismatch of a table so one failing run names all of them.</summary>
    private sealed class Layout
    {
        private readonly List<string> _wrong = [];
        private readonly byte* _base;
        private readonly string _struct;

        public Layout(string structName, void* @base) { _struct = structName; _base = (byte*)@base; }

        public Layout At(string field, void* address, long expected)
        {
            var actual = (byte*)address - _base;
            if (actual != expected) _wrong.Add($"{_struct}.{field} at {actual}, kernel has {expected}");
            return this;
        }

        public void Check() => Assert.Empty(_wrong);
    }

    private static void Size<T>(int expected) where T : unmanaged
    {
        Assert.Equal(expected, sizeof(T));
        Assert.Equal(expected, Unsafe.SizeOf<T>());
        Assert.Equal(expected, Marshal.SizeOf<T>());
    }

    [Fact]
    public void Struct_sizes_match_the_kernel()
    {
        Size<KvmRegs>(144);
        Size<KvmSegment>(24);
        Size<KvmDtable>(16);
        Size<KvmSregs>(312);
        Size<KvmVcpuEvents>(64);
        Size<KvmMsrFilterRange>(24);
        Size<KvmMsrFilter>(392);
        Size<KvmUserspaceMemoryRegion>(32);
        Size<KvmUserspaceMemoryRegion2>(160);
        Size<KvmEnableCap>(104);
        Size<KvmInterrupt>(4);
        Size<KvmDirtyLog>(16);
        Size<KvmRun>(2352);
        Size<UffdioApi>(24);
        Size<UffdioRange>(16);
        Size<UffdioRegister>(32);
        Size<UffdioCopy>(40);
        Size<UffdioMove>(40);
        Size<UffdioZeropage>(32);
        Size<UffdioContinue>(32);
        Size<UffdioWriteprotect>(24);
        Size<UffdMsg>(32);
        Size<Sigevent>(64);
        Size<Itimerspec>(32);
        Size<Siginfo>(128);
        Size<Timespec>(16);
        Size<Iovec>(16);
        Size<Msghdr>(56);
        Size<Cmsghdr>(16);
        Size<SchedAttr>(56);
    }

    [Fact]
    public void Sched_attr_offsets()
    {
        // include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1; syscall numbers from arch/x86/entry/syscalls/syscall_64.tbl
        SchedAttr a;
        var p = &a;
        new Layout("sched_attr", p)
            .At("size", &p->Size, 0).At("sched_policy", &p->SchedPolicy, 4).At("sched_flags", &p->SchedFlags, 8)
            .At("sched_nice", &p->SchedNice, 16).At("sched_priority", &p->SchedPriority, 20).At("sched_runtime", &p->SchedRuntime, 24)
            .At("sched_deadline", &p->SchedDeadline, 32).At("sched_period", &p->SchedPeriod, 40)
            .At("sched_util_min", &p->SchedUtilMin, 48).At("sched_util_max", &p->SchedUtilMax, 52)
            .Check();
        Assert.Equal(314, Libc.SYS_sched_setattr);
        Assert.Equal(315, Libc.SYS_sched_getattr);
    }

    [Fact]
    public void Gather_send_struct_offsets()
    {
        // uapi/linux/uio.h and linux/socket.h (user_msghdr), x86-64 (measured with a C probe: offsetof)
        Iovec iov;
        var v = &iov;
        new Layout("iovec", v).At("iov_base", &v->IovBase, 0).At("iov_len", &v->IovLen, 8).Check();
        Msghdr msg;
        var m = &msg;
        new Layout("msghdr", m)
            .At("msg_name", &m->MsgName, 0).At("msg_namelen", &m->MsgNamelen, 8).At("msg_iov", &m->MsgIov, 16)
            .At("msg_iovlen", &m->MsgIovlen, 24).At("msg_control", &m->MsgControl, 32).At("msg_controllen", &m->MsgControllen, 40)
            .At("msg_flags", &m->MsgFlags, 48)
            .Check();
        Assert.Equal(0x4000, Libc.MSG_NOSIGNAL);
        Assert.Equal(1024, Libc.UIO_MAXIOV);
    }

    [Fact]
    public void Kvm_run_header_and_sync_regs_offsets()
    {
        KvmRun run;
        var r = &run;
        new Layout("kvm_run", r)
            .At("request_interrupt_window", &r->RequestInterruptWindow, 0)
            .At("immediate_exit", &r->ImmediateExit, 1)
            .At("exit_reason", &r->ExitReason, 8)
            .At("ready_for_interrupt_injection", &r->ReadyForInterruptInjection, 12)
            .At("if_flag", &r->IfFlag, 13)
            .At("flags", &r->Flags, 14)
            .At("cr8", &r->Cr8, 16)
            .At("apic_base", &r->ApicBase, 24)
            .At("kvm_valid_regs", &r->KvmValidRegs, 288)
            .At("kvm_dirty_regs", &r->KvmDirtyRegs, 296)
            .At("s.regs", &r->SyncRegs, 304)
            .At("s.regs.rbx", &r->SyncRegs.Rbx, 304 + 8)
            .At("s.regs.rip", &r->SyncRegs.Rip, 304 + 128)
            .At("s.sregs", &r->SyncSregs, 304 + 144)
            .At("s.sregs.cr3", &r->SyncSregs.Cr3, 304 + 144 + 240)
            .At("s.events", &r->SyncEvents, 304 + 144 + 312)
            .Check();
    }

    [Fact]
    public void Kvm_run_exit_union_offsets()
    {
        KvmRun run;
        var r = &run;
        new Layout("kvm_run", r)
            .At("io.direction", &r->Io.Direction, 32)
            .At("io.size", &r->Io.Size, 33)
            .At("io.port", &r->Io.Port, 34)
            .At("io.count", &r->Io.Count, 36)
            .At("io.data_offset", &r->Io.DataOffset, 40)
            .At("mmio.phys_addr", &r->Mmio.PhysAddr, 32)
            .At("mmio.data", r->Mmio.Data, 40)
            .At("mmio.len", &r->Mmio.Len, 48)
            .At("mmio.is_write", &r->Mmio.IsWrite, 52)
            .At("memory_fault.flags", &r->MemoryFault.Flags, 32)
            .At("memory_fault.gpa", &r->MemoryFault.Gpa, 40)
            .At("memory_fault.size", &r->MemoryFault.Size, 48)
            .At("internal.suberror", &r->Internal.Suberror, 32)
            .At("internal.ndata", &r->Internal.Ndata, 36)
            .At("internal.data", r->Internal.Data, 40)
            .At("system_event.type", &r->SystemEvent.Type, 32)
            .At("system_event.ndata", &r->SystemEvent.Ndata, 36)
            .At("system_event.data", r->SystemEvent.Data, 40)
            .At("msr.error", &r->Msr.Error, 32)
            .At("msr.reason", &r->Msr.Reason, 40)
            .At("msr.index", &r->Msr.Index, 44)
            .At("msr.data", &r->Msr.Data, 48)
            .At("hw.hardware_exit_reason", &r->HardwareExitReason, 32)
            .At("fail_entry.cpu", &r->FailEntryCpu, 40)
            .Check();
        // every union arm fits in the 256-byte padded union, before kvm_valid_regs
        Assert.True(32 + sizeof(KvmRunInternal) <= 288);
        Assert.True(32 + sizeof(KvmRunSystemEvent) <= 288);
    }

    [Fact]
    public void Posix_timer_and_signal_struct_offsets()
    {
        // glibc bits/types/sigevent_t.h and uapi/asm-generic/siginfo.h, x86-64 (measured with a C probe: offsetof)
        Sigevent ev;
        var e = &ev;
        new Layout("sigevent", e)
            .At("sigev_value", &e->SigevValue, 0).At("sigev_signo", &e->SigevSigno, 8).At("sigev_notify", &e->SigevNotify, 12)
            .At("sigev_notify_thread_id", &e->SigevNotifyThreadId, 16)
            .Check();
        Itimerspec its;
        var t = &its;
        new Layout("itimerspec", t).At("it_interval", &t->ItInterval, 0).At("it_value", &t->ItValue, 16).Check();
        Siginfo si;
        var i = &si;
        new Layout("siginfo_t", i).At("si_signo", &i->SiSigno, 0).At("si_errno", &i->SiErrno, 4).At("si_code", &i->SiCode, 8)
            .At("si_overrun", &i->SiOverrun, 20)
            .Check();
        Assert.Equal(4, Libc.SIGEV_THREAD_ID);
        Assert.Equal(1, Libc.CLOCK_MONOTONIC);
        Assert.Equal(-2, Libc.SI_TIMER);
        Assert.Equal(-6, Libc.SI_TKILL);
    }

    [Fact]
    public void Kvm_regs_offsets()
    {
        KvmRegs regs;
        var r = &regs;
        new Layout("kvm_regs", r)
            .At("rax", &r->Rax, 0).At("rbx", &r->Rbx, 8).At("rcx", &r->Rcx, 16).At("rdx", &r->Rdx, 24)
            .At("rsi", &r->Rsi, 32).At("rdi", &r->Rdi, 40).At("rsp", &r->Rsp, 48).At("rbp", &r->Rbp, 56)
            .At("r8", &r->R8, 64).At("r9", &r->R9, 72).At("r10", &r->R10, 80).At("r11", &r->R11, 88)
            .At("r12", &r->R12, 96).At("r13", &r->R13, 104).At("r14", &r->R14, 112).At("r15", &r->R15, 120)
            .At("rip", &r->Rip, 128).At("rflags", &r->Rflags, 136)
            .Check();
    }

    [Fact]
    public void Kvm_segment_dtable_and_sregs_offsets()
    {
        KvmSegment seg;
        var g = &seg;
        new Layout("kvm_segment", g)
            .At("base", &g->Base, 0).At("limit", &g->Limit, 8).At("selector", &g->Selector, 12).At("type", &g->Type, 14)
            .At("present", &g->Present, 15).At("dpl", &g->Dpl, 16).At("db", &g->Db, 17).At("s", &g->S, 18).At("l", &g->L, 19)
            .At("g", &g->G, 20).At("avl", &g->Avl, 21).At("unusable", &g->Unusable, 22).At("padding", &g->Padding, 23)
            .Check();

        KvmDtable dt;
        var d = &dt;
        new Layout("kvm_dtable", d).At("base", &d->Base, 0).At("limit", &d->Limit, 8).Check();

        KvmSregs sregs;
        var s = &sregs;
        new Layout("kvm_sregs", s)
            .At("cs", &s->Cs, 0).At("ds", &s->Ds, 24).At("es", &s->Es, 48).At("fs", &s->Fs, 72).At("gs", &s->Gs, 96)
            .At("ss", &s->Ss, 120).At("tr", &s->Tr, 144).At("ldt", &s->Ldt, 168).At("gdt", &s->Gdt, 192).At("idt", &s->Idt, 208)
            .At("cr0", &s->Cr0, 224).At("cr2", &s->Cr2, 232).At("cr3", &s->Cr3, 240).At("cr4", &s->Cr4, 248).At("cr8", &s->Cr8, 256)
            .At("efer", &s->Efer, 264).At("apic_base", &s->ApicBase, 272).At("interrupt_bitmap", s->InterruptBitmap, 280)
            .Check();
    }

    [Fact]
    public void Kvm_vcpu_events_offsets()
    {
        KvmVcpuEvents events;
        var e = &events;
        new Layout("kvm_vcpu_events", e)
            .At("exception.injected", &e->ExceptionInjected, 0).At("exception.nr", &e->ExceptionNr, 1)
            .At("exception.has_error_code", &e->ExceptionHasErrorCode, 2).At("exception.pending", &e->ExceptionPending, 3)
            .At("exception.error_code", &e->ExceptionErrorCode, 4)
            .At("interrupt.injected", &e->InterruptInjected, 8).At("interrupt.nr", &e->InterruptNr, 9)
            .At("interrupt.soft", &e->InterruptSoft, 10).At("interrupt.shadow", &e->InterruptShadow, 11)
            .At("nmi.injected", &e->NmiInjected, 12).At("nmi.pending", &e->NmiPending, 13).At("nmi.masked", &e->NmiMasked, 14)
            .At("sipi_vector", &e->SipiVector, 16).At("flags", &e->Flags, 20)
            .At("smi.smm", &e->SmiSmm, 24).At("smi.pending", &e->SmiPending, 25).At("smi.smm_inside_nmi", &e->SmiInsideNmi, 26)
            .At("smi.latched_init", &e->SmiLatchedInit, 27).At("triple_fault.pending", &e->TripleFaultPending, 28)
            .At("exception_has_payload", &e->ExceptionHasPayload, 55).At("exception_payload", &e->ExceptionPayload, 56)
            .Check();
    }

    [Fact]
    public void Kvm_memory_region_enable_cap_and_small_arg_offsets()
    {
        KvmUserspaceMemoryRegion region;
        var m = &region;
        new Layout("kvm_userspace_memory_region", m)
            .At("slot", &m->Slot, 0).At("flags", &m->Flags, 4).At("guest_phys_addr", &m->GuestPhysAddr, 8)
            .At("memory_size", &m->MemorySize, 16).At("userspace_addr", &m->UserspaceAddr, 24)
            .Check();

        KvmUserspaceMemoryRegion2 region2;
        var m2 = &region2;
        new Layout("kvm_userspace_memory_region2", m2)
            .At("slot", &m2->Slot, 0).At("flags", &m2->Flags, 4).At("guest_phys_addr", &m2->GuestPhysAddr, 8)
            .At("memory_size", &m2->MemorySize, 16).At("userspace_addr", &m2->UserspaceAddr, 24)
            .At("guest_memfd_offset", &m2->GuestMemfdOffset, 32).At("guest_memfd", &m2->GuestMemfd, 40).At("pad1", &m2->Pad1, 44)
            .At("userfault_bitmap (pad2[0])", &m2->UserfaultBitmap, 48)
            .Check();

        KvmEnableCap cap;
        var c = &cap;
        new Layout("kvm_enable_cap", c).At("cap", &c->Cap, 0).At("flags", &c->Flags, 4).At("args", c->Args, 8).Check();

        KvmDirtyLog log;
        var l = &log;
        new Layout("kvm_dirty_log", l).At("slot", &l->Slot, 0).At("dirty_bitmap", &l->DirtyBitmap, 8).Check();

        KvmSignalMask mask;
        var k = &mask;
        new Layout("kvm_signal_mask", k).At("len", &k->Len, 0).At("sigset", &k->Sigset, 4).Check();
    }

    [Fact]
    public void Userfaultfd_struct_offsets()
    {
        UffdioApi api;
        var a = &api;
        new Layout("uffdio_api", a).At("api", &a->Api, 0).At("features", &a->Features, 8).At("ioctls", &a->Ioctls, 16).Check();

        UffdioRange range;
        var r = &range;
        new Layout("uffdio_range", r).At("start", &r->Start, 0).At("len", &r->Len, 8).Check();

        UffdioRegister reg;
        var g = &reg;
        new Layout("uffdio_register", g)
            .At("range.start", &g->Range.Start, 0).At("range.len", &g->Range.Len, 8).At("mode", &g->Mode, 16).At("ioctls", &g->Ioctls, 24)
            .Check();

        UffdioCopy copy;
        var c = &copy;
        new Layout("uffdio_copy", c)
            .At("dst", &c->Dst, 0).At("src", &c->Src, 8).At("len", &c->Len, 16).At("mode", &c->Mode, 24).At("copy", &c->Copy, 32)
            .Check();

        UffdioZeropage zero;
        var z = &zero;
        new Layout("uffdio_zeropage", z)
            .At("range.start", &z->Range.Start, 0).At("range.len", &z->Range.Len, 8).At("mode", &z->Mode, 16).At("zeropage", &z->Zeropage, 24)
            .Check();

        UffdioContinue cont;
        var n = &cont;
        new Layout("uffdio_continue", n)
            .At("range.start", &n->Range.Start, 0).At("range.len", &n->Range.Len, 8).At("mode", &n->Mode, 16).At("mapped", &n->Mapped, 24)
            .Check();

        UffdioWriteprotect wp;
        var w = &wp;
        new Layout("uffdio_writeprotect", w).At("range.start", &w->Range.Start, 0).At("range.len", &w->Range.Len, 8).At("mode", &w->Mode, 16).Check();

        UffdMsg msg;
        var m = &msg;
        new Layout("uffd_msg", m)
            .At("event", &m->Event, 0).At("arg.pagefault.flags", &m->PagefaultFlags, 8)
            .At("arg.pagefault.address", &m->PagefaultAddress, 16).At("arg.pagefault.feat.ptid", &m->PagefaultPtid, 24)
            .Check();
    }

    /// <summary>The literal values of KERNEL-FACTS.md §1.1 and §5, computed there with the kernel's own _IO* macros.</summary>
    private static readonly Dictionary<string, uint> KernelIoctls = new()
    {
        ["KVM_GET_API_VERSION"] = 0x0000AE00,
        ["KVM_CREATE_VM"] = 0x0000AE01,
        ["KVM_CHECK_EXTENSION"] = 0x0000AE03,
        ["KVM_GET_VCPU_MMAP_SIZE"] = 0x0000AE04,
        ["KVM_CREATE_VCPU"] = 0x0000AE41,
        ["KVM_GET_DIRTY_LOG"] = 0x4010AE42,
        ["KVM_SET_USER_MEMORY_REGION"] = 0x4020AE46,
        ["KVM_SET_TSS_ADDR"] = 0x0000AE47,
        ["KVM_SET_USER_MEMORY_REGION2"] = 0x40A0AE49,
        ["KVM_RUN"] = 0x0000AE80,
        ["KVM_GET_REGS"] = 0x8090AE81,
        ["KVM_SET_REGS"] = 0x4090AE82,
        ["KVM_GET_SREGS"] = 0x8138AE83,
        ["KVM_SET_SREGS"] = 0x4138AE84,
        ["KVM_INTERRUPT"] = 0x4004AE86,
        ["KVM_SET_SIGNAL_MASK"] = 0x4004AE8B,
        ["KVM_NMI"] = 0x0000AE9A,
        ["KVM_GET_VCPU_EVENTS"] = 0x8040AE9F,
        ["KVM_SET_VCPU_EVENTS"] = 0x4040AEA0,
        ["KVM_ENABLE_CAP"] = 0x4068AEA3,
        ["KVM_X86_SET_MSR_FILTER"] = 0x4188AEC6,   // _IOW(KVMIO, 0xc6, struct kvm_msr_filter) (392)
        ["USERFAULTFD_IOC_NEW"] = 0x0000AA00,
        ["UFFDIO_REGISTER"] = 0xC020AA00,
        ["UFFDIO_UNREGISTER"] = 0x8010AA01,
        ["UFFDIO_WAKE"] = 0x8010AA02,
        ["UFFDIO_COPY"] = 0xC028AA03,
        ["UFFDIO_ZEROPAGE"] = 0xC020AA04,
        ["UFFDIO_MOVE"] = 0xC028AA05,
        ["UFFDIO_WRITEPROTECT"] = 0xC018AA06,
        ["UFFDIO_CONTINUE"] = 0xC020AA07,
        ["UFFDIO_API"] = 0xC018AA3F,
    };

    [Fact]
    public void Ioctl_numbers_match_the_kernel()
    {
        Assert.Equal(0x0000AE00u, KvmIoctls.KVM_GET_API_VERSION);
        Assert.Equal(0x0000AE01u, KvmIoctls.KVM_CREATE_VM);
        Assert.Equal(0x0000AE03u, KvmIoctls.KVM_CHECK_EXTENSION);
        Assert.Equal(0x0000AE04u, KvmIoctls.KVM_GET_VCPU_MMAP_SIZE);
        Assert.Equal(0x0000AE41u, KvmIoctls.KVM_CREATE_VCPU);
        Assert.Equal(0x4010AE42u, KvmIoctls.KVM_GET_DIRTY_LOG);
        Assert.Equal(0x4020AE46u, KvmIoctls.KVM_SET_USER_MEMORY_REGION);
        Assert.Equal(0x0000AE47u, KvmIoctls.KVM_SET_TSS_ADDR);
        Assert.Equal(0x40A0AE49u, KvmIoctls.KVM_SET_USER_MEMORY_REGION2);
        Assert.Equal(0x0000AE80u, KvmIoctls.KVM_RUN);
        Assert.Equal(0x8090AE81u, KvmIoctls.KVM_GET_REGS);
        Assert.Equal(0x4090AE82u, KvmIoctls.KVM_SET_REGS);
        Assert.Equal(0x8138AE83u, KvmIoctls.KVM_GET_SREGS);
        Assert.Equal(0x4138AE84u, KvmIoctls.KVM_SET_SREGS);
        Assert.Equal(0x4004AE86u, KvmIoctls.KVM_INTERRUPT);
        Assert.Equal(0x4004AE8Bu, KvmIoctls.KVM_SET_SIGNAL_MASK);
        Assert.Equal(0x0000AE9Au, KvmIoctls.KVM_NMI);
        Assert.Equal(0x8040AE9Fu, KvmIoctls.KVM_GET_VCPU_EVENTS);
        Assert.Equal(0x4040AEA0u, KvmIoctls.KVM_SET_VCPU_EVENTS);
        Assert.Equal(0x4068AEA3u, KvmIoctls.KVM_ENABLE_CAP);

        Assert.Equal(0x0000AA00u, UffdIoctls.USERFAULTFD_IOC_NEW);
        Assert.Equal(0xC020AA00u, UffdIoctls.UFFDIO_REGISTER);
        Assert.Equal(0x8010AA01u, UffdIoctls.UFFDIO_UNREGISTER);
        Assert.Equal(0x8010AA02u, UffdIoctls.UFFDIO_WAKE);
        Assert.Equal(0xC028AA03u, UffdIoctls.UFFDIO_COPY);
        Assert.Equal(0xC020AA04u, UffdIoctls.UFFDIO_ZEROPAGE);
        Assert.Equal(0xC028AA05u, UffdIoctls.UFFDIO_MOVE);
        Assert.Equal(0xC018AA06u, UffdIoctls.UFFDIO_WRITEPROTECT);
        Assert.Equal(0xC020AA07u, UffdIoctls.UFFDIO_CONTINUE);
        Assert.Equal(0xC018AA3Fu, UffdIoctls.UFFDIO_API);
    }

    [Fact]
    public void Every_ioctl_the_code_defines_has_a_checked_kernel_value()
    {
        // a number added to Ioctl.cs without a row here fails, so no ioctl goes unchecked
        var defined = typeof(KvmIoctls).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Concat(typeof(UffdIoctls).GetFields(BindingFlags.Public | BindingFlags.Static))
            .Where(f => f.FieldType == typeof(uint))
            .ToDictionary(f => f.Name, f => (uint)f.GetValue(null)!);
        Assert.Equal(KernelIoctls.Keys.Order(), defined.Keys.Order());
        var wrong = defined.Where(d => d.Value != KernelIoctls[d.Key]).Select(d => $"{d.Key} = 0x{d.Value:X8}, kernel has 0x{KernelIoctls[d.Key]:X8}");
        Assert.Empty(wrong);
    }

    [Fact]
    public void Exit_reasons_flags_and_feature_bits_match_the_kernel()
    {
        // kvm_run exit reasons (KERNEL-FACTS §1.3)
        Assert.Equal(
            new uint[] { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 24, 29, 30, 39 },
            new[] { KvmConst.KVM_EXIT_UNKNOWN, KvmConst.KVM_EXIT_EXCEPTION, KvmConst.KVM_EXIT_IO, KvmConst.KVM_EXIT_HYPERCALL,
             KvmConst.KVM_EXIT_DEBUG, KvmConst.KVM_EXIT_HLT, KvmConst.KVM_EXIT_MMIO, KvmConst.KVM_EXIT_IRQ_WINDOW_OPEN,
             KvmConst.KVM_EXIT_SHUTDOWN, KvmConst.KVM_EXIT_FAIL_ENTRY, KvmConst.KVM_EXIT_INTR, KvmConst.KVM_EXIT_INTERNAL_ERROR,
             KvmConst.KVM_EXIT_SYSTEM_EVENT, KvmConst.KVM_EXIT_X86_RDMSR, KvmConst.KVM_EXIT_X86_WRMSR, KvmConst.KVM_EXIT_MEMORY_FAULT });
        Assert.Equal((0, 1), (KvmConst.KVM_EXIT_IO_IN, KvmConst.KVM_EXIT_IO_OUT));
        Assert.Equal((1u, 2u, 4u, 8u), (KvmConst.KVM_MEM_LOG_DIRTY_PAGES, KvmConst.KVM_MEM_READONLY, KvmConst.KVM_MEM_GUEST_MEMFD, KvmConst.KVM_MEM_USERFAULT));
        Assert.Equal((1UL, 2UL, 4UL), (KvmConst.KVM_SYNC_X86_REGS, KvmConst.KVM_SYNC_X86_SREGS, KvmConst.KVM_SYNC_X86_EVENTS));
        Assert.Equal((8UL, 0x10UL), (KvmConst.KVM_MEMORY_EXIT_FLAG_PRIVATE, KvmConst.KVM_MEMORY_EXIT_FLAG_USERFAULT));
        Assert.Equal((1u, 2u, 4u, 8u, 0x10u, 0x20u),
            (KvmConst.KVM_VCPUEVENT_VALID_NMI_PENDING, KvmConst.KVM_VCPUEVENT_VALID_SIPI_VECTOR, KvmConst.KVM_VCPUEVENT_VALID_SHADOW,
             KvmConst.KVM_VCPUEVENT_VALID_SMM, KvmConst.KVM_VCPUEVENT_VALID_PAYLOAD, KvmConst.KVM_VCPUEVENT_VALID_TRIPLE_FAULT));

        // capabilities (§1.2)
        Assert.Equal(
            new uint[] { 0, 1, 3, 4, 9, 10, 16, 22, 41, 59, 66, 74, 81, 136, 143, 164, 168, 183, 188, 189, 192, 201, 231, 232, 233, 234, 235, 236 },
            new[]
            {
                KvmCap.Irqchip, KvmCap.Hlt, KvmCap.UserMemory, KvmCap.SetTssAddr, KvmCap.NrVcpus, KvmCap.NrMemslots, KvmCap.SyncMmu,
                KvmCap.UserNmi, KvmCap.VcpuEvents, KvmCap.AsyncPf, KvmCap.MaxVcpus, KvmCap.SyncRegs, KvmCap.ReadonlyMem,
                KvmCap.ImmediateExit, KvmCap.X86DisableExits, KvmCap.ExceptionPayload, KvmCap.ManualDirtyLogProtect2, KvmCap.AsyncPfInt,
                KvmCap.X86UserSpaceMsr, KvmCap.X86MsrFilter, KvmCap.DirtyLogRing, KvmCap.ExitHypercall, KvmCap.UserMemory2,
                KvmCap.MemoryFaultInfo, KvmCap.MemoryAttributes, KvmCap.GuestMemfd, KvmCap.VmTypes, KvmCap.PreFaultMemory,
            }.Select(c => (uint)c));
        Assert.Equal(28, Enum.GetValues<KvmCap>().Length); // a new capability needs a row above

        // userfaultfd (§5)
        Assert.Equal(0xAAUL, UffdConst.UFFD_API);
        Assert.Equal((byte)0x12, UffdConst.UFFD_EVENT_PAGEFAULT);
        Assert.Equal((1UL, 2UL, 4UL), (UffdConst.UFFD_PAGEFAULT_FLAG_WRITE, UffdConst.UFFD_PAGEFAULT_FLAG_WP, UffdConst.UFFD_PAGEFAULT_FLAG_MINOR));
        Assert.Equal((1UL, 2UL, 4UL), (UffdConst.UFFDIO_REGISTER_MODE_MISSING, UffdConst.UFFDIO_REGISTER_MODE_WP, UffdConst.UFFDIO_REGISTER_MODE_MINOR));
        Assert.Equal((1UL, 2UL, 4UL), ((ulong)UffdRegisterMode.Missing, (ulong)UffdRegisterMode.WriteProtect, (ulong)UffdRegisterMode.Minor));
        Assert.Equal((1UL, 1UL, 1UL, 1UL),
            (UffdConst.UFFDIO_COPY_MODE_DONTWAKE, UffdConst.UFFDIO_CONTINUE_MODE_DONTWAKE, UffdConst.UFFDIO_ZEROPAGE_MODE_DONTWAKE, UffdConst.UFFDIO_WRITEPROTECT_MODE_WP));
        var features = Enum.GetValues<UffdFeatures>().Where(f => f != UffdFeatures.None).ToDictionary(f => f.ToString(), f => (ulong)f);
        Assert.Equal(17, features.Count);
        Assert.Equal(1UL << 5, features["MissingShmem"]);
        Assert.Equal(1UL << 7, features["Sigbus"]);
        Assert.Equal(1UL << 8, features["ThreadId"]);
        Assert.Equal(1UL << 10, features["MinorShmem"]);
        Assert.Equal(1UL << 11, features["ExactAddress"]);
        Assert.Equal(1UL << 16, features["Move"]);
        // the 17 bits are exactly 0..16, each once
        Assert.Equal(Enumerable.Range(0, 17).Select(b => 1UL << b), features.Values.Order());
    }
}
