namespace Faultline.Guest;

/// <summary>The guest programs Faultline generates. Every one ends with done(result) through the doorbell.</summary>
public enum Workload
{
    /// <summary>Writes the pattern (qword at GPA a = a + seed) into N qwords of every page of the range; done(pages).</summary>
    Write,
    /// <summary>Reads N qwords of every page; done(sum of what it read).</summary>
    Read,
    /// <summary>Checks N qwords of every page against the pattern; done(number of mismatching qwords).</summary>
    Verify,
    /// <summary>Verifies the pattern of generation <c>seed</c>, then writes generation <c>seed2</c> (RBP) into every page; done(mismatches).</summary>
    VerifyThenWrite,
    /// <summary>Spins forever incrementing RBX: for kicks and instruction-rate probes.</summary>
    Spin,
    /// <summary>Reads the qword at RDI once, reports it, then writes RDI+seed there; done(value read).</summary>
    TouchOnce,
    /// <summary>CPL0 only: OUT to port 0x10 (AL = RDX), IN from port 0x11 (reported), an MMIO read at RSI (reported), HLT, done(0).</summary>
    ExitTour,
    /// <summary>
    /// The generation program (see <see cref="GenerationProgram"/>): loops passes forever, all state in registers. Pass 0
    /// writes generation 0, pass k ≥ 1 verifies generation k-1 and writes generation k; report(pass, mismatches) at
    /// each pass end. Never calls done.
    /// </summary>
    Generations,
}

/// <summary>Order in which a workload visits its pages.</summary>
public enum AccessOrder
{
    /// <summary>Every page once, lowest address first.</summary>
    Sequential,
    /// <summary>Every page once, in a full-period LCG's order over the next power of two (indices past the end skipped).</summary>
    Random,
    /// <summary>As many accesses as pages, 90% in a drifting hot set of 1/16 of the range, the rest uniform (<see cref="Faultline.Guest.Hotset"/>).</summary>
    Hotset,
}

/// <summary>Per-vCPU arguments, passed in registers at entry.</summary>
public readonly record struct WorkloadArgs(
    ulong Start, ulong End, ulong Seed = 0, int QwordsPerPage = 1, AccessOrder Order = AccessOrder.Sequential, ulong OrderSeed = 1,
    ulong Seed2 = 0)
{
    public const ulong LcgMultiplier = 1664525; // ≡ 1 (mod 4): full period mod 2^k with an odd increment (Hull–Dobell); an imm32 in guest code
    public ulong Pages => (End - Start) >> 12;

    /// <summary>
    /// The page-visit order this workload's guest code follows (host twin of the guest LCG and hotset walk; for tests).
    /// Sequential and random visit each page once; hotset yields one page index per access, repeats included.
    /// </summary>
    public IEnumerable<ulong> PageOrder()
    {
        if (Order == AccessOrder.Sequential) { for (ulong p = 0; p < Pages; p++) yield return p; yield break; }
        if (Order == AccessOrder.Hotset)
        {
            var walk = HotsetWalk.Start(Pages, OrderSeed);
            for (ulong n = 0; n < Pages; n++) yield return walk.Next();
            yield break;
        }
        var (mask, inc, idx) = Lcg();
        for (ulong n = 0; n <= mask; n++)
        {
            if (idx < Pages) yield return idx;
            idx = (idx * LcgMultiplier + inc) & mask;
        }
    }

    /// <summary>The distinct pages a pass touches (all of them for sequential and random).</summary>
    public HashSet<ulong> TouchedPages() => [.. PageOrder()];

    internal (ulong Mask, ulong Increment, ulong Start) Lcg()
    {
        ulong mask = 1;
        while (mask < Pages) mask <<= 1;
        mask -= 1;
        return (mask, (OrderSeed * 2 + 1) & mask | 1, OrderSeed * 0x9E3779B97F4A7C15UL & mask);
    }
}
