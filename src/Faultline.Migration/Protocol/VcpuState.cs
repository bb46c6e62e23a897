using Faultline.Guest.Tasks;
using Faultline.Kvm.Interop;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;

namespace Faultline.Migration.Protocol;

/// <summary>
/// One paused vCPU as it travels: registers, special registers, pending events, and where the guest has them, its
/// async-PF registration (with arm's, its SDEI events) and its part of the task kernel's state (the generation program keeps all its progress in
/// registers; the task kernel keeps its scheduler in the system region); and any optional sections this version
/// doesn't know (kept, not applied).
/// </summary>
public sealed class VcpuState
{
    public int Id { get; init; }
    public KvmRegs Regs;
    public KvmSregs Sregs;
    public KvmVcpuEvents Events;
    public AsyncPfVcpuState? AsyncPf { get; init; }
    public TaskSystemState? TaskKernel { get; init; }
    /// <summary>arm protocol: the SDEI registration beside <see cref="AsyncPf"/>.</summary>
    public ArmSdeiRegistration? Sdei { get; init; }
    public IReadOnlyList<(ushort Tag, byte[] Data)> UnknownOptional { get; init; } = [];
}
