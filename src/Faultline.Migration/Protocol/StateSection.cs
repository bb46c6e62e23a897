namespace Faultline.Migration.Protocol;

/// <summary>Tags of the sections of one vCPU's state. Wire values: only add. A tag with <see cref="Optional"/> set may be skipped by a reader that doesn't know it.</summary>
public static class StateSection
{
    public const ushort Regs = 0x0001;           // struct kvm_regs, 144 bytes, x86-64 uapi layout
    public const ushort Sregs = 0x0002;          // struct kvm_sregs, 312 bytes
    public const ushort Events = 0x0003;         // struct kvm_vcpu_events, 64 bytes
    /// <summary>
    /// The async-PF registration (GuestStateCodec): enable word and "page ready" interrupt (x86: the two MSRs; arm: the
    /// ENABLE word and the PPI), token counter, outstanding faults. Which protocol: the layout's.
    /// </summary>
    public const ushort AsyncPf = 0x0010;
    /// <summary>The task kernel's state of this vCPU in the system region (TaskStateCodec): (GPA, bytes) ranges.</summary>
    public const ushort TaskKernel = 0x0011;
    /// <summary>arm protocol: the SDEI side (GuestStateCodec): the async-PF event's number, the PE's mask, each event's registration.</summary>
    public const ushort Sdei = 0x0012;
    // 0x0100 was the test workload's progress (protocol ≤ 3); retired: the workload is a guest program, its state is its registers
    /// <summary>Flag bit: a reader that doesn't know this section may ignore it .</summary>
    public const ushort Optional = 0x0001;
}
