using Faultline.Kvm;

namespace Faultline.Guest.Probe;

/// <summary>A KVM_CHECK_EXTENSION answer on /dev/kvm.</summary>
public readonly record struct CapabilityValue(KvmCap Cap, int Value)
{
    public uint Number => (uint)Cap;
    public string Name => Cap.ToString();
    /// <summary>The uapi name, e.g. KVM_CAP_X86_USER_SPACE_MSR.</summary>
    public string KernelName => "KVM_CAP_" + HostProbe.UpperSnake(Name);
}
