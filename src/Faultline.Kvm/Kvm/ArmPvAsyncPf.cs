namespace Faultline.Kvm;

/// <summary>
/// The arm64 async page fault ABI of Gavin Shan's series (seeds 003 and 004, KERNEL-FACTS §7), carried over to this x86
/// host: SMCCC calls (Arm DEN0028) for the guest to configure it, SDEI (Arm DEN0054) for "page not present", an
/// interrupt for "page ready" (a PPI on arm64, a vector here), and a per-vCPU control block. One definition for both
/// sides Faultline plays, the generated guest and the host that serves it, as <see cref="KvmPvAsyncPf"/> is for x86.
/// <para><b>Calling convention on x86.</b> The SMCCC function ID (bit 31 fast call, bit 30 SMC64, bits 29:24 owning
/// entity, bits 15:0 function number) is in RAX; arguments x1..x4 are RCX, RDX, RSI, RDI (the registers the task
/// kernel's handlers save anyway); results x0..x3 come back in RAX, RCX, RDX, RSI. The trap (arm64's <c>hvc</c>/<c>smc</c>)
/// is a qword store of RAX to <see cref="Conduit"/>, a page outside every memslot: an MMIO write exit. This host's
/// <c>vmcall</c> never exits to userspace (HOST.md), an MSR exit needs ECX/EDX:EAX for itself, and at CPL0 an MMIO
/// write exit comes after the store retired, so the VMM writes the results into the synced registers and re-enters
/// without any ioctl.</para>
/// </summary>
public static class ArmPvAsyncPf
{
    /// <summary>The SMCCC conduit: a store of the function ID here is the <c>hvc #0</c>.</summary>
    public const ulong Conduit = 0xFFFFE000;

    // SMCCC function ID layout (DEN0028)
    public const uint FastCall = 1u << 31, Smc64 = 1u << 30;
    public const int OwnerShift = 24;
    public const uint OwnerMask = 0x3F, OwnerStandard = 4, OwnerVendorHyp = 6;
    public static uint FunctionId(bool smc64, uint owner, uint number) => FastCall | (smc64 ? Smc64 : 0) | (owner << OwnerShift) | (number & 0xFFFF);

    // SMCCC return codes
    public const long SmcccSuccess = 0, SmcccNotSupported = -1, SmcccInvalidParameter = -3;

    /// <summary>The vendor-hypervisor async-PF service, ARM_SMCCC_KVM_FUNC_ASYNC_PF = 2 (SMC32 fast call): 0x86000002. The sub-function is x1.</summary>
    public const uint AsyncPfFunctionId = 0x86000002;
    public const ulong FnVersion = 0, FnSlots = 1, FnSdei = 2, FnIrq = 3, FnEnable = 4, FnIrqAck = 5;
    /// <summary>What ASYNC_PF VERSION answers (and the VMM's GET_VERSION): major.minor.revision, one byte each.</summary>
    public const ulong Version = 0x010000;
    /// <summary>ENABLE's control word (x2 = bits 31:0, x3 = bits 63:32): bits 63:6 = the control block's GPA.</summary>
    public const ulong Enabled = 1, SendAlways = 2, ReservedBits = 0x3C;

    /// <summary>The control block (kvm_vcpu_pv_apf_data of the series): reason u32 @0, token u32 @4, 64 bytes, 64-aligned.</summary>
    public const int ReasonOffset = 0, TokenOffset = 4, ControlBlockBytes = 64;
    public const uint ReasonPageNotPresent = 1, ReasonPageReady = 2;

    // SDEI (DEN0054 v1.1): SMC64 fast calls of the standard service, 0xC4000020..
    public const uint SdeiVersion = 0xC4000020, SdeiEventRegister = 0xC4000021, SdeiEventEnable = 0xC4000022, SdeiEventDisable = 0xC4000023,
        SdeiEventContext = 0xC4000024, SdeiEventComplete = 0xC4000025, SdeiEventCompleteAndResume = 0xC4000026, SdeiEventUnregister = 0xC4000027,
        SdeiEventStatus = 0xC4000028, SdeiEventGetInfo = 0xC4000029, SdeiEventRoutingSet = 0xC400002A, SdeiPeMask = 0xC400002B,
        SdeiPeUnmask = 0xC400002C, SdeiInterruptBind = 0xC400002D, SdeiInterruptRelease = 0xC400002E, SdeiEventSignal = 0xC400002F,
        SdeiFeatures = 0xC4000030, SdeiPrivateReset = 0xC4000031, SdeiSharedReset = 0xC4000032;
    public const uint SdeiFirst = 0xC4000020, SdeiLast = 0xC400003F;

    // SDEI return codes
    public const long SdeiSuccess = 0, SdeiNotSupported = -1, SdeiInvalidParameters = -2, SdeiDenied = -3, SdeiPending = -5, SdeiOutOfResource = -10;
    /// <summary>VERSION: major 1 (bits 62:48), minor 1 (bits 47:32), vendor 0.</summary>
    public const ulong SdeiVersionValue = 1UL << 48 | 1UL << 32;
    /// <summary>EVENT_STATUS bits.</summary>
    public const ulong StatusRegistered = 1, StatusEnabled = 2, StatusRunning = 4;
    /// <summary>EVENT_GET_INFO queries.</summary>
    public const ulong InfoType = 0, InfoSignaled = 1, InfoPriority = 2, InfoRoutingMode = 3, InfoRoutingAffinity = 4;
    /// <summary>The software-signalled event (EVENT_SIGNAL), private to each PE.</summary>
    public const uint SoftwareSignaledEvent = 0;
    /// <summary>The async-PF event the VMM configures by default (GET/SET_SDEI change it).</summary>
    public const uint DefaultAsyncPfEvent = 0x40000001;
    /// <summary>The "page ready" interrupt the VMM configures by default (GET/SET_IRQ): a vector on this host.</summary>
    public const byte DefaultReadyVector = 0xED;
}
