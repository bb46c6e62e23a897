using Faultline.Kvm;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// The host half of "async PF user" (seed 000, Nikita Kalyazin's RFC), as one interface with the RFC's two operations.
/// <list type="bullet">
/// <item><see cref="TryAccept"/>: the fault exit that KVM would flag KVM_MEMORY_EXIT_FLAG_ASYNC_PF_USER with
/// <c>memory_fault.async_pf_user_token</c>: "page not present (T)" is delivered, the vCPU is resumed at once, the page
/// is requested. False is the RFC's plain userfault exit: resolve synchronously.</item>
/// <item><see cref="Ready"/>: KVM_ASYNC_PF_USER_READY(T) (any thread): "page ready (T)" is delivered as soon as the
/// vCPU can take it.</item>
/// </list>
/// On a kernel with the RFC (or its rework in Firecracker's secret-hiding kernels, a KVM_ASYNC_PF vCPU ioctl with ACCEPT
/// and READY) both are ioctls; this host has neither (<see cref="AsyncPfSupport"/>), so <see cref="UserspaceAsyncPf"/>
/// provides them from userspace with the guest ABI KVM would use.
/// </summary>
public interface IAsyncPageFaults
{
    /// <summary>On the vCPU's thread at a fault exit on page <paramref name="index"/>: true if it is now an async fault.</summary>
    bool TryAccept(Vcpu vcpu, ulong index, out uint token);

    /// <summary>The page of <paramref name="token"/> on <paramref name="vcpu"/> is present: deliver "page ready". Any thread.</summary>
    void Ready(int vcpu, uint token);
}
