namespace Faultline.Guest.Probe;

/// <summary>A KVM_CHECK_EXTENSION answer for a capability number this project has no stable name for.</summary>
public readonly record struct RawCapabilityValue(uint Number, int Value);
