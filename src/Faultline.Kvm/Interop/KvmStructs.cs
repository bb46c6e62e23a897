using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

// Layouts from include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (x86-64); sizes and offsets are
// checked by AbiLayoutTests against the kernel's values (KERNEL-FACTS.md §1).

/// <summary>struct kvm_regs (144 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 144)]
public struct KvmRegs
{
    [FieldOffset(0)] public ulong Rax; [FieldOffset(8)] public ulong Rbx; [FieldOffset(16)] public ulong Rcx; [FieldOffset(24)] public ulong Rdx;
    [FieldOffset(32)] public ulong Rsi; [FieldOffset(40)] public ulong Rdi; [FieldOffset(48)] public ulong Rsp; [FieldOffset(56)] public ulong Rbp;
    [FieldOffset(64)] public ulong R8; [FieldOffset(72)] public ulong R9; [FieldOffset(80)] public ulong R10; [FieldOffset(88)] public ulong R11;
    [FieldOffset(96)] public ulong R12; [FieldOffset(104)] public ulong R13; [FieldOffset(112)] public ulong R14; [FieldOffset(120)] public ulong R15;
    [FieldOffset(128)] public ulong Rip; [FieldOffset(136)] public ulong Rflags;
}

/// <summary>struct kvm_segment (24 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 24)]
public struct KvmSegment
{
    [FieldOffset(0)] public ulong Base; [FieldOffset(8)] public uint Limit; [FieldOffset(12)] public ushort Selector;
    [FieldOffset(14)] public byte Type; [FieldOffset(15)] public byte Present; [FieldOffset(16)] public byte Dpl; [FieldOffset(17)] public byte Db;
    [FieldOffset(18)] public byte S; [FieldOffset(19)] public byte L; [FieldOffset(20)] public byte G; [FieldOffset(21)] public byte Avl;
    [FieldOffset(22)] public byte Unusable; [FieldOffset(23)] public byte Padding;
}

/// <summary>struct kvm_dtable (16 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct KvmDtable
{
    [FieldOffset(0)] public ulong Base; [FieldOffset(8)] public ushort Limit;
}

/// <summary>struct kvm_sregs (312 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 312)]
public unsafe struct KvmSregs
{
    [FieldOffset(0)] public KvmSegment Cs; [FieldOffset(24)] public KvmSegment Ds; [FieldOffset(48)] public KvmSegment Es;
    [FieldOffset(72)] public KvmSegment Fs; [FieldOffset(96)] public KvmSegment Gs; [FieldOffset(120)] public KvmSegment Ss;
    [FieldOffset(144)] public KvmSegment Tr; [FieldOffset(168)] public KvmSegment Ldt;
    [FieldOffset(192)] public KvmDtable Gdt; [FieldOffset(208)] public KvmDtable Idt;
    [FieldOffset(224)] public ulong Cr0; [FieldOffset(232)] public ulong Cr2; [FieldOffset(240)] public ulong Cr3; [FieldOffset(248)] public ulong Cr4;
    [FieldOffset(256)] public ulong Cr8; [FieldOffset(264)] public ulong Efer; [FieldOffset(272)] public ulong ApicBase;
    [FieldOffset(280)] public fixed ulong InterruptBitmap[4];
}

/// <summary>struct kvm_vcpu_events (64 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
public struct KvmVcpuEvents
{
    [FieldOffset(0)] public byte ExceptionInjected; [FieldOffset(1)] public byte ExceptionNr; [FieldOffset(2)] public byte ExceptionHasErrorCode;
    [FieldOffset(3)] public byte ExceptionPending; [FieldOffset(4)] public uint ExceptionErrorCode;
    [FieldOffset(8)] public byte InterruptInjected; [FieldOffset(9)] public byte InterruptNr; [FieldOffset(10)] public byte InterruptSoft; [FieldOffset(11)] public byte InterruptShadow;
    [FieldOffset(12)] public byte NmiInjected; [FieldOffset(13)] public byte NmiPending; [FieldOffset(14)] public byte NmiMasked;
    [FieldOffset(16)] public uint SipiVector; [FieldOffset(20)] public uint Flags;
    [FieldOffset(24)] public byte SmiSmm; [FieldOffset(25)] public byte SmiPending; [FieldOffset(26)] public byte SmiInsideNmi; [FieldOffset(27)] public byte SmiLatchedInit;
    [FieldOffset(28)] public byte TripleFaultPending;
    [FieldOffset(55)] public byte ExceptionHasPayload; [FieldOffset(56)] public ulong ExceptionPayload;
}

/// <summary>struct kvm_userspace_memory_region (32 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct KvmUserspaceMemoryRegion
{
    [FieldOffset(0)] public uint Slot; [FieldOffset(4)] public uint Flags; [FieldOffset(8)] public ulong GuestPhysAddr;
    [FieldOffset(16)] public ulong MemorySize; [FieldOffset(24)] public ulong UserspaceAddr;
}

/// <summary>struct kvm_userspace_memory_region2 (160 bytes); UserfaultBitmap is pad2[0] on kernels without KVM Userfault.</summary>
[StructLayout(LayoutKind.Explicit, Size = 160)]
internal struct KvmUserspaceMemoryRegion2
{
    [FieldOffset(0)] public uint Slot; [FieldOffset(4)] public uint Flags; [FieldOffset(8)] public ulong GuestPhysAddr;
    [FieldOffset(16)] public ulong MemorySize; [FieldOffset(24)] public ulong UserspaceAddr;
    [FieldOffset(32)] public ulong GuestMemfdOffset; [FieldOffset(40)] public uint GuestMemfd; [FieldOffset(44)] public uint Pad1;
    [FieldOffset(48)] public ulong UserfaultBitmap;
}

/// <summary>struct kvm_enable_cap (104 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 104)]
internal unsafe struct KvmEnableCap
{
    [FieldOffset(0)] public uint Cap; [FieldOffset(4)] public uint Flags; [FieldOffset(8)] public fixed ulong Args[4];
}

/// <summary>struct kvm_msr_filter_range (24 bytes): flags u32 @0, nmsrs u32 @4, base u32 @8, bitmap pointer @16 (a 1 bit allows, 0 exits).</summary>
[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct KvmMsrFilterRange
{
    [FieldOffset(0)] public uint Flags; [FieldOffset(4)] public uint Nmsrs; [FieldOffset(8)] public uint Base; [FieldOffset(16)] public ulong Bitmap;
}

/// <summary>struct kvm_msr_filter (392 bytes): flags u32 @0, ranges[16] @8.</summary>
[StructLayout(LayoutKind.Explicit, Size = 392)]
internal unsafe struct KvmMsrFilter
{
    public const int MaxRanges = 16;
    public const uint DefaultAllow = 0, RangeRead = 1, RangeWrite = 2;
    [FieldOffset(0)] public uint Flags;
    [FieldOffset(8)] public fixed byte Ranges[MaxRanges * 24];
}

/// <summary>struct kvm_interrupt (4 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 4)]
internal struct KvmInterrupt
{
    [FieldOffset(0)] public uint Irq;
}

/// <summary>struct kvm_dirty_log (16 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct KvmDirtyLog
{
    [FieldOffset(0)] public uint Slot; [FieldOffset(8)] public ulong DirtyBitmap;
}

/// <summary>struct kvm_signal_mask with an 8-byte (kernel) sigset.</summary>
[StructLayout(LayoutKind.Explicit, Size = 12)]
internal struct KvmSignalMask
{
    [FieldOffset(0)] public uint Len; [FieldOffset(4)] public ulong Sigset;
}

/// <summary>struct kvm_run, the shared page of a vCPU (2352 bytes of fields; the mapping is page-sized).</summary>
[StructLayout(LayoutKind.Explicit, Size = 2352)]
internal unsafe struct KvmRun
{
    [FieldOffset(0)] public byte RequestInterruptWindow;
    [FieldOffset(1)] public byte ImmediateExit;
    [FieldOffset(8)] public uint ExitReason;
    [FieldOffset(12)] public byte ReadyForInterruptInjection;
    [FieldOffset(13)] public byte IfFlag;
    [FieldOffset(14)] public ushort Flags;
    [FieldOffset(16)] public ulong Cr8;
    [FieldOffset(24)] public ulong ApicBase;
    // exit union @32
    [FieldOffset(32)] public KvmRunIo Io;
    [FieldOffset(32)] public KvmRunMmio Mmio;
    [FieldOffset(32)] public KvmRunMemoryFault MemoryFault;
    [FieldOffset(32)] public KvmRunInternal Internal;
    [FieldOffset(32)] public KvmRunSystemEvent SystemEvent;
    [FieldOffset(32)] public KvmRunMsr Msr;
    [FieldOffset(32)] public ulong HardwareExitReason;     // hw / fail_entry.hardware_entry_failure_reason
    [FieldOffset(40)] public uint FailEntryCpu;
    [FieldOffset(288)] public ulong KvmValidRegs;
    [FieldOffset(296)] public ulong KvmDirtyRegs;
    [FieldOffset(304)] public KvmRegs SyncRegs;              // s.regs.regs
    [FieldOffset(448)] public KvmSregs SyncSregs;            // s.regs.sregs
    [FieldOffset(760)] public KvmVcpuEvents SyncEvents;      // s.regs.events
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct KvmRunIo
{
    [FieldOffset(0)] public byte Direction; [FieldOffset(1)] public byte Size; [FieldOffset(2)] public ushort Port;
    [FieldOffset(4)] public uint Count; [FieldOffset(8)] public ulong DataOffset;
}

[StructLayout(LayoutKind.Explicit, Size = 24)]
internal unsafe struct KvmRunMmio
{
    [FieldOffset(0)] public ulong PhysAddr; [FieldOffset(8)] public fixed byte Data[8]; [FieldOffset(16)] public uint Len; [FieldOffset(20)] public byte IsWrite;
}

[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct KvmRunMemoryFault
{
    [FieldOffset(0)] public ulong Flags; [FieldOffset(8)] public ulong Gpa; [FieldOffset(16)] public ulong Size;
}

[StructLayout(LayoutKind.Explicit, Size = 136)]
internal unsafe struct KvmRunInternal
{
    [FieldOffset(0)] public uint Suberror; [FieldOffset(4)] public uint Ndata; [FieldOffset(8)] public fixed ulong Data[16];
}

[StructLayout(LayoutKind.Explicit, Size = 136)]
internal unsafe struct KvmRunSystemEvent
{
    [FieldOffset(0)] public uint Type; [FieldOffset(4)] public uint Ndata; [FieldOffset(8)] public fixed ulong Data[16];
}

/// <summary>kvm_run.msr (X86_RDMSR / X86_WRMSR): error u8 @0, pad[7], reason u32 @8, index u32 @12, data u64 @16.</summary>
[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct KvmRunMsr
{
    [FieldOffset(0)] public byte Error; [FieldOffset(8)] public uint Reason; [FieldOffset(12)] public uint Index; [FieldOffset(16)] public ulong Data;
}

internal static class KvmConst
{
    public const int KVM_API_VERSION = 12;
    public const uint KVM_EXIT_UNKNOWN = 0, KVM_EXIT_EXCEPTION = 1, KVM_EXIT_IO = 2, KVM_EXIT_HYPERCALL = 3, KVM_EXIT_DEBUG = 4,
        KVM_EXIT_HLT = 5, KVM_EXIT_MMIO = 6, KVM_EXIT_IRQ_WINDOW_OPEN = 7, KVM_EXIT_SHUTDOWN = 8, KVM_EXIT_FAIL_ENTRY = 9,
        KVM_EXIT_INTR = 10, KVM_EXIT_INTERNAL_ERROR = 17, KVM_EXIT_SYSTEM_EVENT = 24, KVM_EXIT_X86_RDMSR = 29,
        KVM_EXIT_X86_WRMSR = 30, KVM_EXIT_MEMORY_FAULT = 39;
    public const byte KVM_EXIT_IO_IN = 0, KVM_EXIT_IO_OUT = 1;
    public const uint KVM_MEM_LOG_DIRTY_PAGES = 1, KVM_MEM_READONLY = 2, KVM_MEM_GUEST_MEMFD = 4, KVM_MEM_USERFAULT = 8;
    public const ulong KVM_SYNC_X86_REGS = 1, KVM_SYNC_X86_SREGS = 2, KVM_SYNC_X86_EVENTS = 4;
    public const ulong KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3, KVM_MEMORY_EXIT_FLAG_USERFAULT = 1 << 4;
    // kvm_vcpu_events.flags (arch/x86/include/uapi/asm/kvm.h)
    public const uint KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1, KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2, KVM_VCPUEVENT_VALID_SHADOW = 0x4,
        KVM_VCPUEVENT_VALID_SMM = 0x8, KVM_VCPUEVENT_VALID_PAYLOAD = 0x10, KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20;
}
