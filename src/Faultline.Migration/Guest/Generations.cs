using Faultline.Guest;
using Faultline.Migration.Protocol;

namespace Faultline.Migration.Guest;

/// <summary>
/// The generation-stamped workload both ends agree on. Each vCPU runs passes over its own range: pass 0 writes
/// generation 0 (Write, pattern: qword at GPA a holds a + seed), pass k ≥ 1 verifies generation k-1 and writes
/// generation k (VerifyThenWrite), page by page, qword by qword. Paused anywhere, a vCPU's range holds generation k
/// below the pause point and k-1 from it on; the destination lets that pass finish (checking the rest against k-1)
/// and then verifies the whole range against k, so every qword written before the pause is checked exactly once.
/// </summary>
public static class Generations
{
    /// <summary>The seed of generation <paramref name="g"/>: distinct per generation, never 0 (0 would be the zero page).</summary>
    public static ulong Seed(ulong g) => 0x5EED_0000_0000_0000UL + (g + 1) * 0x0000_0001_0000_1000UL;

    public static WorkloadProgress Pass(ulong pass, ulong start, ulong end, int qwordsPerPage) => pass == 0
        ? new WorkloadProgress(Workload.Write, qwordsPerPage, start, end, Seed(0), 0, 0)
        : new WorkloadProgress(Workload.VerifyThenWrite, qwordsPerPage, start, end, Seed(pass - 1), Seed(pass), pass);

    public static WorkloadArgs ArgsOf(WorkloadProgress p) =>
        new(p.Start, p.End, p.Seed, p.QwordsPerPage, AccessOrder.Sequential, Seed2: p.Seed2);
}
