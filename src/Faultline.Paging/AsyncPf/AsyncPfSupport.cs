using Faultline.Kvm;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// Which forms of async page faults this host offers, detected at run time. Native "async PF user" (the RFC:
/// KVM_MEMORY_EXIT_FLAG_ASYNC_PF_USER on a KVM Userfault exit + KVM_ASYNC_PF_USER_READY; its rework: a KVM_ASYNC_PF
/// vCPU ioctl) exists only on top of KVM Userfault, which is probed for real (<see cref="Vm.ProbeNativeUserfault"/>).
/// The userspace form needs MSR exits (to see the guest enable async PF) and exception payloads (a #PF with CR2 =
/// token): both are checked here.
/// </summary>
public sealed record AsyncPfSupport(bool Native, bool Userspace, string Why)
{
    public static AsyncPfSupport Detect(KvmSystem kvm)
    {
        var userfault = Vm.ProbeNativeUserfault(kvm);
        var msr = kvm.CheckExtension(KvmCap.X86UserSpaceMsr) > 0 && kvm.CheckExtension(KvmCap.X86MsrFilter) > 0;
        var payload = kvm.CheckExtension(KvmCap.ExceptionPayload) > 0;
        var user = msr && payload;
        var why = (userfault ? "KVM Userfault present, but no kernel with async PF user is known to this build; " : "no KVM Userfault, so no native async PF user; ")
            + (user ? "userspace form: MSR filter + user-space MSR exits, #PF with payload, KVM_INTERRUPT from the vCPU thread"
                    : $"userspace form unavailable ({(msr ? "" : "no MSR filter/user-space MSR exits ")}{(payload ? "" : "no exception payload")})");
        return new AsyncPfSupport(Native: false, Userspace: user, why);
    }
}
