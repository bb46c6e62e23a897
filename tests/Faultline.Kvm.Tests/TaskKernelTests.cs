using System.Runtime.InteropServices;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Memory;
using Faultline.TestKit;

namespace Faultline.Kvm.Tests;

/// <summary>
/// The task kernel without async page faults: every task of every vCPU runs to its end, memory tasks check every page
/// of their range, a wrong page is counted by exactly the task that reads it, and the guest's TSCs say the CPU task
/// finished after the memory tasks (they have priority).
/// </summary>
public sealed class TaskKernelTests
{
    private const ulong Seed = 0x5eed;

    [KvmTheory]
    [InlineData(1, 1)]
    [InlineData(1, 4)]
    [InlineData(2, 3)]
    [InlineData(1, 0)]
    public void Every_task_runs_to_its_end_and_checks_every_page(int vcpus, int memTasks)
    {
        var kernel = new TaskKernel();
        using var m = GuestMachine.Create(new MachineConfig(vcpus, (ulong)vcpus * 256 * 4096) { Kernel = kernel.Kernel });
        FillPattern(m.Ram, Seed);
        var program = new TaskProgram(m, kernel, new TaskConfig(memTasks, 1_000_000, AsyncPf: false, Seed));
        program.Boot();
        var outcome = m.RunBooted(timeout: TimeSpan.FromSeconds(60));
        Assert.All(outcome.Vcpus, v => Assert.Null(v.Error));
        var results = program.Read();
        Assert.Equal(vcpus, results.Count);
        foreach (var r in results)
        {
            Assert.Equal(1 + memTasks, r.Tasks.Count);
            Assert.All(r.Tasks, t => Assert.True(t.DoneTsc > r.StartTsc, $"task {t.Kind} has no completion time"));
            Assert.Equal(0, r.Mismatches);
            Assert.Equal(0, r.NotPresent);
            var cpu = r.Tasks.Single(t => t.Kind == "cpu");
            Assert.All(r.Tasks.Where(t => t.Kind != "cpu"), t => Assert.True(t.DoneTsc < cpu.DoneTsc));
        }
    }

    [KvmFact]
    public void A_wrong_page_is_counted_by_the_task_that_reads_it()
    {
        var kernel = new TaskKernel();
        using var m = GuestMachine.Create(new MachineConfig(1, 256 * 4096) { Kernel = kernel.Kernel });
        FillPattern(m.Ram, Seed);
        var program = new TaskProgram(m, kernel, new TaskConfig(4, 1000, AsyncPf: false, Seed));
        var (start, _) = program.RangeOf(0, 2);
        MemoryMarshal.Cast<byte, ulong>(m.Ram.Span(new GuestAddress(start + 4096), 4096))[0] ^= 1;
        program.Boot();
        var outcome = m.RunBooted(timeout: TimeSpan.FromSeconds(60));
        Assert.Null(outcome.Vcpus[0].Error);
        var r = program.Read()[0];
        Assert.Equal([0L, 0L, 0L, 1L, 0L], r.Tasks.Select(t => t.Mismatches));
    }

    internal static void FillPattern(GuestRegion ram, ulong seed)
    {
        for (ulong off = 0; off < ram.Size; off += 4096)
        {
            var q = MemoryMarshal.Cast<byte, ulong>(ram.Span(ram.Base + off, 4096));
            var a = ram.Base.Value + off + seed;
            for (var i = 0; i < q.Length; i++) q[i] = a + (ulong)i * 8;
        }
    }
}
