using Faultline.Kvm.Interop;

namespace Faultline.Guest;

/// <summary>
/// The generation program (<see cref="Workload.Generations"/>): a guest that loops passes over its vCPU's range forever,
/// keeping all of its state in registers, so a vCPU paused at any exit and resumed elsewhere from KVM_GET/SET_REGS,
/// SREGS and VCPU_EVENTS alone (with the memory) finishes its pass and goes on. Pass 0 writes generation 0 into every
/// page; pass k ≥ 1 visits pages in the chosen order, verifies each qword, writes generation k, and at the pass end
/// calls report(<see cref="GenerationReport"/>). The pattern: qword at GPA a of generation g holds a + <see cref="Seed"/>(g).
///
/// Register ABI (RIP at the entry of the chosen order, RSP unused, no SSE):
/// RDI range start, RBX pages, RCX qwords per page (1..512); RBP pass k, RDX Seed(k) (written), RSI Seed(k-1) (checked),
/// R9 cumulative mismatching qwords. Sequential: R8 page index. Random: R8 LCG index, R11 steps left, R12 mask,
/// R13 increment. Hotset: R11 accesses left (pass 0: pages left of its sequential sweep), R8 xorshift state, R12 hot
/// start, R13 drift countdown. Scratch: RAX, R10, R14, R15.
///
/// Checks: sequential and random visit each page once per pass, so each qword must hold exactly generation k-1.
/// Hotset pass 0 writes every page in a sequential sweep, since a page it never wrote would read as zero; later passes
/// revisit pages, so the check is relaxed: a page's first qword must be a pattern of its own address (value − a has
/// its low 32 bits zero and the tag in its high byte) of a generation ≤ k, and every other qword must be of that same
/// generation (a torn page mismatches). Another address's bytes, a zero page and a torn page all count.
/// </summary>
public static class GenerationProgram
{
    /// <summary>The high byte of every seed: value − a = Tag + (g &lt;&lt; 32).</summary>
    public const ulong Tag = 0x5E00_0000_0000_0000UL;
    /// <summary>Generations are 24 bits wide, like the pass in a report.</summary>
    public const ulong MaxGeneration = (1UL << 24) - 1;

    /// <summary>The seed of generation <paramref name="g"/>: low 32 bits zero (another address's pattern never matches), never 0.</summary>
    public static ulong Seed(ulong g) => Tag + ((g & MaxGeneration) << 32);

    /// <summary>The qword of generation <paramref name="g"/> at <paramref name="gpa"/>.</summary>
    public static ulong ValueAt(ulong gpa, ulong g) => gpa + Seed(g);

    /// <summary>The generation a qword at <paramref name="gpa"/> holds, or null when it is no pattern of that address.</summary>
    public static ulong? GenerationOf(ulong gpa, ulong value)
    {
        var d = value - gpa;
        if ((d & 0xFFFF_FFFF) != 0 || (d & 0xFF00_0000_0000_0000UL) != Tag) return null;
        return d >> 32 & MaxGeneration;
    }

    /// <summary>The pass a paused vCPU is in (RBP).</summary>
    public static ulong PassOf(in KvmRegs r) => r.Rbp;

    /// <summary>
    /// The page (index from <paramref name="ramBase"/>) a paused vCPU goes on with: in a sequential pass the one after
    /// the last it finished (RDI + R8 pages); in the other orders its range's first page (the order is not a front).
    /// </summary>
    public static ulong ResumePage(in KvmRegs r, AccessOrder order, ulong ramBase) =>
        ((order == AccessOrder.Sequential ? r.Rdi + (r.R8 << 12) : r.Rdi) - ramBase) >> 12;

    /// <summary>The cumulative mismatches a paused vCPU has found (R9).</summary>
    public static ulong MismatchesOf(in KvmRegs r) => r.R9;

    internal static KvmRegs EntryRegisters(ulong rip, int vcpu, WorkloadArgs args)
    {
        var r = new KvmRegs
        {
            Rip = rip, Rflags = 2, Rsp = GuestLayout.UserStackTop(vcpu),
            Rdi = args.Start, Rbx = args.Pages, Rcx = (ulong)Math.Clamp(args.QwordsPerPage, 1, 512),
            Rbp = 0, Rdx = Seed(0), Rsi = 0, R9 = 0,
        };
        switch (args.Order)
        {
            case AccessOrder.Random:
                var (mask, inc, start) = args.Lcg();
                r.R8 = start; r.R11 = mask + 1; r.R12 = mask; r.R13 = inc;
                break;
            case AccessOrder.Hotset:
                r.R8 = Hotset.InitialState(args.OrderSeed); r.R11 = args.Pages; r.R12 = 0; r.R13 = Hotset.DriftEvery;
                break;
        }
        return r;
    }

    /// <summary>
    /// Host twin: the page indices (one per access, in order) of the pass after the one whose report the vCPU is
    /// stopped at, from its registers there (any order's state at a pass end is the next pass's start state).
    /// </summary>
    public static IEnumerable<ulong> NextPassPages(KvmRegs atReport, AccessOrder order)
    {
        var pages = atReport.Rbx;
        switch (order)
        {
            case AccessOrder.Sequential:
                for (ulong p = 0; p < pages; p++) yield return p;
                break;
            case AccessOrder.Random:
                var idx = atReport.R8;
                for (ulong n = 0; n <= atReport.R12; n++)
                {
                    if (idx < pages) yield return idx;
                    idx = (idx * WorkloadArgs.LcgMultiplier + atReport.R13) & atReport.R12;
                }
                break;
            case AccessOrder.Hotset:
                var walk = HotsetWalk.FromRegisters(atReport);
                for (ulong n = 0; n < pages; n++) yield return walk.Next();
                break;
        }
    }
}
