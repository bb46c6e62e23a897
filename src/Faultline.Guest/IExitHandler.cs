using Faultline.Kvm;

namespace Faultline.Guest;

/// <summary>Something that can resolve a vCPU exit on the vCPU's own thread (a paging engine, a migration destination).</summary>
public interface IExitHandler
{
    /// <summary>Handles the exit and returns true (the vCPU re-enters), or false when the exit is not this handler's.</summary>
    bool TryHandleExit(Vcpu vcpu, in VcpuExit exit);

    /// <summary>Called on each vCPU thread before its first KVM_RUN, and after its last (both may be no-ops).</summary>
    void OnVcpuThreadStart(Vcpu vcpu) { }
    void OnVcpuThreadStop(Vcpu vcpu) { }

    /// <summary>Right after <see cref="OnVcpuThreadStart"/>, with the loop that runs the vCPU (to post events into it).</summary>
    void OnVcpuLoopStart(VcpuLoop loop) { }
}
