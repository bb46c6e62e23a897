namespace Faultline.Guest.Probe;

/// <summary>One missing-page experiment at one privilege level.</summary>
/// <param name="Level">Where the guest's access ran.</param>
/// <param name="Kind">What the VMM saw.</param>
/// <param name="ExpectedAddress">The GPA the guest touched.</param>
/// <param name="AddressReported">Whether KVM reported an address with the exit.</param>
/// <param name="Address">The reported address, when <paramref name="AddressReported"/>.</param>
/// <param name="IsWrite">Whether the exit was for a write, when KVM says (MMIO exits).</param>
/// <param name="RawExitReason">kvm_run.exit_reason as read after KVM_RUN returned.</param>
/// <param name="Detail">The decoded exit, for humans.</param>
public sealed record FaultExitObservation(
    PrivilegeLevel Level, FaultExitKind Kind, ulong ExpectedAddress, bool AddressReported, ulong? Address, bool? IsWrite,
    uint RawExitReason, string Detail)
{
    /// <summary>The JSON/CLI word for <see cref="Kind"/>: memory_fault, mmio, efault or none.</summary>
    public string Word => KindWord(Kind);

    /// <summary>The reported address is on the page the guest touched.</summary>
    public bool AddressMatches => Address is { } a && (a & ~0xFFFUL) == (ExpectedAddress & ~0xFFFUL);

    public static string KindWord(FaultExitKind k) => k switch
    {
        FaultExitKind.MemoryFault => "memory_fault",
        FaultExitKind.Mmio => "mmio",
        FaultExitKind.Efault => "efault",
        _ => "none",
    };
}
