using Faultline.Kvm.Interop;

namespace Faultline.Migration.Protocol;

/// <summary>One paused vCPU as it travels: registers, special registers, pending events (guest-visible state only: the workload is a guest program whose progress is in its registers), and any optional sections this version doesn't know (kept, not applied).</summary>
public sealed class VcpuState
{
    public int Id { get; init; }
    public KvmRegs Regs;
    public KvmSregs Sregs;
    public KvmVcpuEvents Events;
    public IReadOnlyList<(ushort Tag, byte[] Data)> UnknownOptional { get; init; } = [];
}
