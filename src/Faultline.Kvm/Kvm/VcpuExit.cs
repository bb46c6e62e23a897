using Faultline.Kvm.Memory;

namespace Faultline.Kvm;

/// <summary>Why KVM_RUN returned, in this project's words.</summary>
public enum VcpuExitKind
{
    Hlt, IoIn, IoOut,
    /// <summary>An access to a guest address outside every RAM slot.</summary>
    Mmio,
    /// <summary>A guest access to RAM whose host page is not there (see <see cref="MemoryFaultForm"/>).</summary>
    MemoryFault,
    /// <summary>KVM_RUN returned EINTR: a kick, or immediate_exit.</summary>
    Interrupted,
    Shutdown, InternalError, FailEntry, SystemEvent, MsrRead, MsrWrite, IrqWindowOpen, Exception, Debug, Hypercall, Unknown,
}

/// <summary>How KVM reported a memory fault: the kernels differ, the engines need to know.</summary>
public enum MemoryFaultForm
{
    None,
    /// <summary>KVM_EXIT_MEMORY_FAULT after -EFAULT, with gpa/size/flags (upstream, KVM Userfault).</summary>
    MemoryFaultExit,
    /// <summary>KVM's emulator turned the failed access into KVM_EXIT_MMIO inside a RAM slot (CPL0 here). The access must be completed by the VMM.</summary>
    EmulatedMmio,
    /// <summary>-EFAULT and no address (CPL3 here); RIP is still at the faulting instruction and nothing of it is committed.</summary>
    BareEfault,
}

/// <summary>One KVM_RUN exit, decoded from kvm_run in place. A value: holding it allocates nothing.</summary>
public readonly record struct VcpuExit
{
    public VcpuExitKind Kind { get; init; }
    public uint RawReason { get; init; }
    /// <summary>MMIO or memory-fault address (valid when <see cref="HasAddress"/>).</summary>
    public GuestAddress Address { get; init; }
    public bool HasAddress { get; init; }
    /// <summary>Access size in bytes (MMIO, IO element size, memory-fault size).</summary>
    public uint Size { get; init; }
    public bool IsWrite { get; init; }
    /// <summary>Data written (MMIO write, IO out first element, MSR write value).</summary>
    public ulong Data { get; init; }
    public ushort Port { get; init; }
    public uint Count { get; init; }
    /// <summary>memory_fault.flags, internal suberror, system event type, MSR index or hardware reason.</summary>
    public ulong Flags { get; init; }
    public MemoryFaultForm Form { get; init; }

    public override string ToString() => Kind switch
    {
        VcpuExitKind.IoIn or VcpuExitKind.IoOut => $"{Kind} port 0x{Port:x} size {Size} data 0x{Data:x}",
        VcpuExitKind.Mmio => $"MMIO {(IsWrite ? "write" : "read")} {Address} len {Size} data 0x{Data:x}",
        VcpuExitKind.MemoryFault => HasAddress ? $"memory fault ({Form}) at {Address} size {Size} flags 0x{Flags:x}" : $"memory fault ({Form}) without address",
        VcpuExitKind.InternalError => $"internal error (suberror {Flags})",
        VcpuExitKind.FailEntry => $"fail entry (hardware reason 0x{Flags:x})",
        VcpuExitKind.SystemEvent => $"system event type {Flags}",
        VcpuExitKind.MsrRead or VcpuExitKind.MsrWrite => $"{Kind} msr 0x{Flags:x} data 0x{Data:x}",
        _ => $"{Kind} (exit reason {RawReason})",
    };
}
