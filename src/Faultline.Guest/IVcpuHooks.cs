using Faultline.Kvm;

namespace Faultline.Guest;

/// <summary>
/// What a caller of <see cref="VcpuLoop"/> decides: every method runs on the vCPU's own thread, so it may issue vCPU
/// ioctls (boot a workload, restore or capture state, arm a self-kick timer). Called at every exit: keep them
/// allocation-free. Exits that are not guest calls go to the loop's <see cref="IExitHandler"/> instead.
/// </summary>
public interface IVcpuHooks
{
    /// <summary>After the vCPU is bound to this thread and the exit handler's <see cref="IExitHandler.OnVcpuThreadStart"/>, before the first KVM_RUN.</summary>
    void OnThreadStart(VcpuLoop loop) { }

    /// <summary>Before each KVM_RUN, after the stop check and before pending events are injected. Finish ends the loop.</summary>
    VcpuLoopAction BeforeRun(VcpuLoop loop) => VcpuLoopAction.Continue;

    /// <summary>
    /// A done() or report() through the doorbell: what it means for this caller (done() of a pass may boot the next
    /// workload and continue). fail() and the kernel's exception report never get here: they end the loop with a
    /// <see cref="GuestException"/>.
    /// </summary>
    VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call);

    /// <summary>Right after the ioctl that injected <paramref name="e"/> (KVM_SET_VCPU_EVENTS or KVM_INTERRUPT) returned.</summary>
    void OnInjected(VcpuLoop loop, in VcpuEvent e) { }

    /// <summary>After the last KVM_RUN (also when the loop failed), before the exit handler's stop and the unbind.</summary>
    void OnThreadStop(VcpuLoop loop) { }
}
