namespace Faultline.Kvm;

/// <summary>
/// The x86 paravirtual async page fault ABI between a guest and its hypervisor (uapi asm/kvm_para.h, msr.rst): the
/// MSRs a guest writes to enable it and to acknowledge a "page ready", the enable bits, and the reasons in the 64-byte
/// area's flags word. One definition for both sides Faultline plays: the generated guest and the host that serves it.
/// </summary>
public static class KvmPvAsyncPf
{
    public const uint MsrEnable = 0x4b564d02, MsrInterrupt = 0x4b564d06, MsrAck = 0x4b564d07;
    /// <summary>MSR_KVM_ASYNC_PF_EN bits: the area's GPA is bits 63:6.</summary>
    public const ulong Enabled = 1, SendAlways = 2, DeliveryAsPfVmexit = 4, DeliveryAsInt = 8, ReservedBits = 0x30;
    /// <summary>What current KVM needs before it delivers anything: ENABLED and DELIVERY_AS_INT.</summary>
    public const ulong EnabledWithInterrupt = Enabled | DeliveryAsInt;
    /// <summary>The area's flags word (u32 @0) for a "not present"; "page ready" puts the token in the word @4.</summary>
    public const uint ReasonPageNotPresent = 1;
    public const int FlagsOffset = 0, TokenOffset = 4;
}
