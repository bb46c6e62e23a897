namespace Faultline.Guest;

/// <summary>
/// What the generation program reports at each pass end: report(value), value = pass &lt;&lt; 40 | mismatches, the pass
/// that just ended in bits 63..40 and the cumulative count of mismatching qwords (saturated at 2^40 - 1) in bits 39..0.
/// </summary>
public readonly record struct GenerationReport(ulong Pass, ulong Mismatches)
{
    public const int PassShift = 40;
    public const ulong MismatchMask = (1UL << PassShift) - 1;

    public static GenerationReport Decode(ulong value) => new(value >> PassShift, value & MismatchMask);

    public ulong Encode() => Pass << PassShift | Math.Min(Mismatches, MismatchMask);
}
