using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.TestKit;

namespace Faultline.Kvm.Tests;

/// <summary>Every access order on plain populated memory: the guest's answers and the host twin's pages agree.</summary>
public sealed class WorkloadOrderTests
{
    private const int PagesPerVcpu = 300;   // not a power of two
    private const int Qwords = 4;
    private const ulong Seed = 0x5eed_0000_0077, Seed2 = 0x5eed_0001_0000;

    [KvmTheory]
    [InlineData(AccessOrder.Sequential)]
    [InlineData(AccessOrder.Random)]
    [InlineData(AccessOrder.Hotset)]
    public void Each_order_touches_the_pages_its_host_twin_names_and_verifies_what_it_reads(AccessOrder order)
    {
        using var m = GuestMachine.Create(new MachineConfig(2, 2 * PagesPerVcpu * 4096));
        WorkloadArgs Args(int v, ulong seed = Seed, ulong seed2 = 0) => m.ArgsFor(v, seed, Qwords, order, seed2);

        var written = m.Run(Workload.Write, i => Args(i), PrivilegeLevel.User).ThrowIfFailed();
        for (var v = 0; v < 2; v++)
        {
            var accesses = Args(v).PageOrder().ToList();
            var touched = Args(v).TouchedPages();
            Assert.Equal((ulong)accesses.Count, written.Vcpus[v].Result);
            if (order == AccessOrder.Hotset)
            {
                Assert.Equal(PagesPerVcpu, accesses.Count);
                Assert.InRange(touched.Count, (int)Hotset.HotPages(PagesPerVcpu) + 1, PagesPerVcpu - 1);
            }
            else Assert.Equal(PagesPerVcpu, touched.Count);
            // the host: touched pages hold the pattern in their first Qwords qwords, everything else is still zero
            var (start, _) = m.RangeOf(v);
            long wrong = 0;
            for (ulong p = 0; p < PagesPerVcpu; p++)
                for (ulong q = 0; q < 512; q++)
                {
                    var gpa = start + p * 4096 + q * 8;
                    var expected = touched.Contains(p) && q < Qwords ? gpa.Value + Seed : 0;
                    if (m.Ram.Qword(gpa) != expected) wrong++;
                }
            Assert.Equal(0, wrong);
        }

        Assert.All(m.Run(Workload.Verify, i => Args(i), PrivilegeLevel.User).ThrowIfFailed().Vcpus, v => Assert.Equal(0UL, v.Result));

        var read = m.Run(Workload.Read, i => Args(i), PrivilegeLevel.User).ThrowIfFailed();
        for (var v = 0; v < 2; v++)
        {
            var (start, _) = m.RangeOf(v);
            ulong sum = 0;
            foreach (var p in Args(v).PageOrder())
                for (ulong q = 0; q < Qwords; q++) sum += start.Value + p * 4096 + q * 8 + Seed;
            Assert.Equal(sum, read.Vcpus[v].Result);
        }

        // one qword of a page vCPU 1 visits: found once per visit, by vCPU 1 alone
        var order1 = Args(1).PageOrder().ToList();
        var victim = order1[order1.Count / 2];
        m.Ram.Qword(m.RangeOf(1).Start + victim * 4096 + 8) ^= 1;
        var again = m.Run(Workload.Verify, i => Args(i), PrivilegeLevel.User).ThrowIfFailed();
        Assert.Equal(0UL, again.Vcpus[0].Result);
        Assert.Equal((ulong)order1.Count(p => p == victim), again.Vcpus[1].Result);
        m.Ram.Qword(m.RangeOf(1).Start + victim * 4096 + 8) ^= 1;

        // verify-then-write: a hotset pass that revisits a page it rewrote accepts the second seed
        var vtw = m.Run(Workload.VerifyThenWrite, i => Args(i, Seed, Seed2), PrivilegeLevel.User).ThrowIfFailed();
        Assert.All(vtw.Vcpus, v => Assert.Equal(0UL, v.Result));
        foreach (var p in Args(0).TouchedPages())
            Assert.Equal(m.RangeOf(0).Start.Value + p * 4096 + Seed2, m.Ram.Qword(m.RangeOf(0).Start + p * 4096));
    }

    [Fact]
    public void Hotset_accesses_mostly_fall_in_a_hot_set_that_drifts_forward()
    {
        var args = new WorkloadArgs(0x40_0000, 0x40_0000 + 4096UL * 4096, Order: AccessOrder.Hotset, OrderSeed: 3);
        var walk = HotsetWalk.Start(args.Pages, args.OrderSeed);
        var hot = 0;
        var starts = new List<ulong>();
        for (var n = 0; n < 4096; n++)
        {
            var before = walk.HotStart;
            var page = walk.Next();
            if ((page + args.Pages - before) % args.Pages < Hotset.HotPages(args.Pages)) hot++;
            if (n % Hotset.DriftEvery == 0) starts.Add(walk.HotStart);
        }
        Assert.InRange(hot, 4096 * 85 / 100, 4096 * 95 / 100);
        Assert.Equal(4096 / Hotset.DriftEvery * Hotset.DriftPages, (int)walk.HotStart);
        Assert.True(starts.SequenceEqual(starts.Order()), "the hot set only moves forward within one wrap");
    }
}
