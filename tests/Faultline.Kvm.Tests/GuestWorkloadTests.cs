using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

public sealed class GuestWorkloadTests
{
    [KvmTheory]
    [InlineData(1, PrivilegeLevel.User)]
    [InlineData(2, PrivilegeLevel.User)]
    [InlineData(8, PrivilegeLevel.User)]
    [InlineData(1, PrivilegeLevel.Kernel)]
    [InlineData(2, PrivilegeLevel.Kernel)]
    [InlineData(8, PrivilegeLevel.Kernel)]
    public void Write_then_verify_every_page_and_the_host_sees_the_pattern(int vcpus, PrivilegeLevel level)
    {
        var perVcpu = level == PrivilegeLevel.User ? 4 * MiB : 128 * KiB;   // CPL0 is emulated: keep it small
        using var m = GuestMachine.Create(new MachineConfig(vcpus, perVcpu * (ulong)vcpus));
        const ulong seed = 0x5eed_0000_1234;
        var written = m.Run(Workload.Write, i => m.ArgsFor(i, seed, qwordsPerPage: 512), level).ThrowIfFailed();
        Assert.All(written.Vcpus, v => Assert.Equal(perVcpu / 4096, v.Result));

        // the host checks every qword of every page
        var wrong = 0L;
        for (var gpa = m.Ram.Base.Value; gpa < m.Ram.End.Value; gpa += 8)
            if (m.Ram.Qword(new GuestAddress(gpa)) != gpa + seed) wrong++;
        Assert.Equal(0, wrong);

        var verified = m.Run(Workload.Verify, i => m.ArgsFor(i, seed, qwordsPerPage: 512), level).ThrowIfFailed();
        Assert.All(verified.Vcpus, v => Assert.Equal(0UL, v.Result));

        // a page the host corrupts is found by the guest, in exactly the vCPU that owns it
        var victim = m.RangeOf(vcpus - 1).Start + 4096 * 3 + 16;
        m.Ram.Qword(victim) ^= 1;
        m.Ram.Qword(victim + 8) ^= 1;
        var again = m.Run(Workload.Verify, i => m.ArgsFor(i, seed, qwordsPerPage: 512), level).ThrowIfFailed();
        Assert.Equal(2UL, again.Vcpus[vcpus - 1].Result);
        Assert.Equal(2UL, again.TotalResult);
    }

    [KvmTheory]
    [InlineData(PrivilegeLevel.User)]
    [InlineData(PrivilegeLevel.Kernel)]
    public void Random_order_visits_every_page_once_and_reads_what_was_written(PrivilegeLevel level)
    {
        using var m = GuestMachine.Create(new MachineConfig(2, 2 * 200 * 4096)); // 200 pages per vCPU: not a power of two
        m.Run(Workload.Write, i => m.ArgsFor(i, seed: 99, order: AccessOrder.Random), level).ThrowIfFailed();
        for (var gpa = m.Ram.Base.Value; gpa < m.Ram.End.Value; gpa += 4096)
            Assert.Equal(gpa + 99, m.Ram.Qword(new GuestAddress(gpa)));
        var args = m.ArgsFor(0, order: AccessOrder.Random);
        var order = args.PageOrder().ToList();
        Assert.Equal(200, order.Distinct().Count());
        Assert.NotEqual(Enumerable.Range(0, 200).Select(i => (ulong)i), order);

        var read = m.Run(Workload.Read, i => m.ArgsFor(i, order: AccessOrder.Random), level).ThrowIfFailed();
        for (var v = 0; v < 2; v++)
        {
            var (s, e) = m.RangeOf(v);
            ulong expected = 0;
            for (var gpa = s.Value; gpa < e.Value; gpa += 4096) expected += gpa + 99;
            Assert.Equal(expected, read.Vcpus[v].Result);
        }
    }

    [KvmFact]
    public void A_guest_exception_surfaces_as_a_typed_error_with_its_details()
    {
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        // a write range past the identity map's end (5 GiB): not present, so #PF
        var ex = Assert.Throws<GuestException>(() =>
            m.Run(Workload.Write, _ => new WorkloadArgs(0x1_4000_0000, 0x1_4000_2000), PrivilegeLevel.User).ThrowIfFailed());
        Assert.Contains("#PF", ex.Message);
        Assert.Contains("cr2 0x140000000", ex.Message);
    }
}
