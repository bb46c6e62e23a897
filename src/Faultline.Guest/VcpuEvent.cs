namespace Faultline.Guest;

/// <summary>
/// An event for a <see cref="VcpuLoop"/> to inject before a KVM_RUN: an exception with its error code and payload, or an
/// external interrupt. A value: posting one allocates nothing.
/// </summary>
public readonly record struct VcpuEvent
{
    public VcpuEventKind Kind { get; private init; }
    public byte Vector { get; private init; }
    public bool HasErrorCode { get; private init; }
    public uint ErrorCode { get; private init; }
    public bool HasPayload { get; private init; }
    /// <summary>The exception's payload: for #PF the CR2 value (a guest linear address, or an async-PF token).</summary>
    public ulong Payload { get; private init; }
    /// <summary>
    /// Injected only when the guest can take an interrupt (IF set, no shadow), as KVM's own async PF does: always for
    /// an interrupt; for an exception after <see cref="WhenInterruptible"/>. An exception without it goes in at the next
    /// entry whatever the guest is doing, even inside the handler of the previous one (IF does not mask exceptions).
    /// </summary>
    public bool WaitsForInterruptWindow { get; private init; }

    /// <summary>This event, delivered only once the guest can take an interrupt (so never inside another event's handler).</summary>
    public VcpuEvent WhenInterruptible() => this with { WaitsForInterruptWindow = true };

    public const byte PageFaultVector = 14;

    /// <summary>An exception without error code (e.g. #UD, #BP).</summary>
    public static VcpuEvent Exception(byte vector) => new() { Kind = VcpuEventKind.Exception, Vector = CheckException(vector) };

    /// <summary>An exception with an error code (e.g. #GP, #SS).</summary>
    public static VcpuEvent Exception(byte vector, uint errorCode) =>
        new() { Kind = VcpuEventKind.Exception, Vector = CheckException(vector), HasErrorCode = true, ErrorCode = errorCode };

    /// <summary>#PF with its error code and CR2 as payload (needs <see cref="Faultline.Kvm.Vm.EnableExceptionPayload"/>).</summary>
    public static VcpuEvent PageFault(uint errorCode, ulong cr2) => new()
    {
        Kind = VcpuEventKind.Exception, Vector = PageFaultVector, HasErrorCode = true, ErrorCode = errorCode, HasPayload = true, Payload = cr2,
    };

    /// <summary>An external interrupt, delivered when the guest has interrupts enabled.</summary>
    public static VcpuEvent Interrupt(byte vector)
    {
        if (vector < 32) throw new ArgumentOutOfRangeException(nameof(vector), vector, "interrupt vectors are 32..255; 0..31 are exceptions");
        return new VcpuEvent { Kind = VcpuEventKind.Interrupt, Vector = vector, WaitsForInterruptWindow = true };
    }

    private static byte CheckException(byte vector) =>
        vector <= 31 ? vector : throw new ArgumentOutOfRangeException(nameof(vector), vector, "exception vectors are 0..31");
}
