namespace Faultline.Guest;

/// <summary>What a <see cref="VcpuEvent"/> delivers to the guest.</summary>
public enum VcpuEventKind
{
    /// <summary>An exception (vector 0..31), optionally with an error code and a payload: KVM_SET_VCPU_EVENTS.</summary>
    Exception,
    /// <summary>An external interrupt (vector 32..255) once the guest can take one: KVM_INTERRUPT.</summary>
    Interrupt,
}
