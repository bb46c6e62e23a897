namespace Faultline.Guest;

/// <summary>
/// The hotset access order, like an application's working set: a pass is as many accesses as the range has pages; each
/// access draws a xorshift64 number x. If x's high 32 bits are below <see cref="HotThreshold"/> (90% of draws) the
/// access falls in the hot set, <see cref="HotPages"/> pages from the hot start (wrapping at the range's end), at
/// offset (low32(x) × hot pages) >> 32; otherwise anywhere in the range, at (low32(x) × pages) >> 32. Every
/// <see cref="DriftEvery"/> accesses the hot start moves forward by <see cref="DriftPages"/> pages, wrapping. The guest
/// keeps x, the hot start and the drift countdown in registers (R8, R12, R13); <see cref="HotsetWalk"/> is its host twin.
/// </summary>
public static class Hotset
{
    /// <summary>The hot set is the range's pages >> this (1/16), at least one page.</summary>
    public const int HotShift = 4;
    /// <summary>high32(x) below this is a hot access: 0.9 × 2^32.</summary>
    public const uint HotThreshold = 0xE6666666;
    /// <summary>Accesses between two moves of the hot set.</summary>
    public const int DriftEvery = 64;
    /// <summary>Pages the hot set moves forward each time.</summary>
    public const int DriftPages = 4;

    public static ulong HotPages(ulong pages) => Math.Max(1, pages >> HotShift);

    /// <summary>The xorshift64 state a walk starts from (never 0, which xorshift never leaves).</summary>
    public static ulong InitialState(ulong orderSeed)
    {
        var x = (orderSeed + 1) * 0x9E3779B97F4A7C15UL;
        return x == 0 ? 1 : x;
    }
}
