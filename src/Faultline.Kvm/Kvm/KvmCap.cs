namespace Faultline.Kvm;

/// <summary>KVM_CHECK_EXTENSION capability numbers this project cares about (uapi/linux/kvm.h).</summary>
public enum KvmCap : uint
{
    Irqchip = 0, Hlt = 1, UserMemory = 3, SetTssAddr = 4, NrVcpus = 9, NrMemslots = 10, SyncMmu = 16, UserNmi = 22,
    VcpuEvents = 41, AsyncPf = 59, MaxVcpus = 66, SyncRegs = 74, ReadonlyMem = 81, ImmediateExit = 136, X86DisableExits = 143,
    ExceptionPayload = 164, ManualDirtyLogProtect2 = 168, AsyncPfInt = 183, X86UserSpaceMsr = 188, X86MsrFilter = 189,
    DirtyLogRing = 192, ExitHypercall = 201, UserMemory2 = 231, MemoryFaultInfo = 232, MemoryAttributes = 233, GuestMemfd = 234,
    VmTypes = 235, PreFaultMemory = 236,
}
