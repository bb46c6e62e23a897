using Faultline.Kvm.Interop;

namespace Faultline.Guest;

/// <summary>
/// Host twin of the guest's hotset walk (see <see cref="Hotset"/>): the same xorshift64, hot/cold choice and drift,
/// instruction for instruction, so a test knows which page each access touches.
/// </summary>
public sealed class HotsetWalk(ulong pages, ulong state, ulong hotStart = 0, ulong countdown = Hotset.DriftEvery)
{
    public ulong Pages { get; } = pages;
    /// <summary>The xorshift64 state (guest R8).</summary>
    public ulong State { get; private set; } = state;
    /// <summary>First page of the hot set (guest R12).</summary>
    public ulong HotStart { get; private set; } = hotStart;
    /// <summary>Accesses left before the hot set moves (guest R13).</summary>
    public ulong Countdown { get; private set; } = countdown;

    /// <summary>A walk as a workload starts it for <paramref name="orderSeed"/>.</summary>
    public static HotsetWalk Start(ulong pages, ulong orderSeed) => new(pages, Hotset.InitialState(orderSeed));

    /// <summary>The walk a guest continues from, read from its registers at an access boundary (RBX pages, R8, R12, R13).</summary>
    public static HotsetWalk FromRegisters(in KvmRegs r) => new(r.Rbx, r.R8, r.R12, r.R13);

    /// <summary>The page index of the next access.</summary>
    public ulong Next()
    {
        var x = State;
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        State = x;
        ulong page;
        if ((uint)(x >> 32) < Hotset.HotThreshold)
        {
            page = ((x & 0xFFFF_FFFF) * Hotset.HotPages(Pages) >> 32) + HotStart;
            if (page >= Pages) page -= Pages;
        }
        else page = (x & 0xFFFF_FFFF) * Pages >> 32;
        if (--Countdown == 0)
        {
            Countdown = Hotset.DriftEvery;
            HotStart = (HotStart + Hotset.DriftPages) % Pages;
        }
        return page;
    }
}
