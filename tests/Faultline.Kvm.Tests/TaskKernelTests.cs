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

    [KvmFact]
    public void A_guest_paused_mid_run_finishes_on_a_second_vm_from_its_captured_state()
    {
        const int vcpus = 2;
        var kernel = new TaskKernel();
        var config = new MachineConfig(vcpus, vcpus * 512 * 4096UL) { Kernel = kernel.Kernel };
        var tasks = new TaskConfig(3, 3_000_000_000, AsyncPf: false, Seed);
        using var first = GuestMachine.Create(config);
        FillPattern(first.Ram, Seed);
        var program = new TaskProgram(first, kernel, tasks);
        program.Boot();
        using (var stop = new CancellationTokenSource())
        {
            // cancelled from a thread of its own: a timer's callback runs on the thread pool, which the parallel test
            // classes can starve for longer than the whole run (seen in CI: the guest finished before the "pause")
            var pauser = new Thread(() => { Thread.Sleep(150); stop.Cancel(); }) { IsBackground = true };
            pauser.Start();
            var paused = first.RunBooted(timeout: TimeSpan.FromSeconds(30), ct: stop.Token);
            pauser.Join();
            Assert.All(paused.Vcpus, v => Assert.Contains("stopped", v.Error?.Message));   // paused, not finished
        }
        var state = Enumerable.Range(0, vcpus).Select(program.Capture).ToList();
        var regs = first.Vcpus.Select(v => (v.GetRegs(), v.GetSregs(), v.GetEvents())).ToList();
        Assert.All(regs, r => Assert.True(r.Item1.Rbx > 0, "the CPU task finished before the pause: make it longer"));

        using var second = GuestMachine.Create(config);
        first.Ram.Span(first.Ram.Base, (int)first.Ram.Size).CopyTo(second.Ram.Span(second.Ram.Base, (int)second.Ram.Size));
        var resumed = new TaskProgram(second, kernel, tasks);
        for (var i = 0; i < vcpus; i++) resumed.Restore(i, state[i]);
        for (var i = 0; i < vcpus; i++)
        {
            second.Vcpus[i].SetSregs(regs[i].Item2);
            second.Vcpus[i].SetRegs(regs[i].Item1);
            second.Vcpus[i].SetEvents(regs[i].Item3);
        }
        var outcome = second.RunBooted(timeout: TimeSpan.FromSeconds(60));
        Assert.All(outcome.Vcpus, v => Assert.Null(v.Error));
        var results = resumed.Read();
        Assert.All(results, r => Assert.Equal(0, r.Mismatches));
        Assert.All(results, r => Assert.All(r.Tasks, t => Assert.True(t.DoneTsc > r.StartTsc, $"{t.Kind} did not finish")));

        // a state from another guest shape is refused in words: other task count, a vCPU the guest does not have
        using var other = GuestMachine.Create(new MachineConfig(1, 512 * 4096UL) { Kernel = kernel.Kernel });
        var e = Assert.Throws<UsageException>(() => new TaskProgram(other, kernel, tasks with { MemoryTasks = 2 }).Restore(0, state[0]));
        Assert.Contains("does not match", e.Message);
        e = Assert.Throws<UsageException>(() => new TaskProgram(other, kernel, tasks).Restore(1, state[1]));
        Assert.Contains("vCPU 1", e.Message);
    }

    [KvmTheory]
    [InlineData(1, 1)]
    [InlineData(2, 3)]
    public void Continuous_memory_tasks_pass_until_the_pass_the_host_set_and_the_cpu_task_runs_between_their_slices(int vcpus, int memTasks)
    {
        const ulong chunk = 100_000;
        var kernel = new TaskKernel();
        // 3 MiB per memory task: three slices a pass, so the CPU task gets a chunk at every slice boundary
        using var m = GuestMachine.Create(new MachineConfig(vcpus, (ulong)vcpus * (ulong)memTasks * 768 * 4096) { Kernel = kernel.Kernel });
        FillPattern(m.Ram, Seed);
        var program = new TaskProgram(m, kernel, new TaskConfig(memTasks, chunk, AsyncPf: false, Seed) { Continuous = true });
        var (start, _) = program.RangeOf(vcpus - 1, memTasks - 1);
        MemoryMarshal.Cast<byte, ulong>(m.Ram.Span(new GuestAddress(start + 8192), 4096))[0] ^= 1;   // read by the last task once a pass
        program.Boot();
        for (var v = 0; v < vcpus; v++) program.StopAfterMorePasses(v, 3);
        var outcome = m.RunBooted(timeout: TimeSpan.FromSeconds(60));
        Assert.All(outcome.Vcpus, v => Assert.Null(v.Error));
        var results = program.Read();
        foreach (var r in results)
        {
            var memory = r.Tasks.Where(t => t.Kind != "cpu").ToList();
            Assert.All(memory, t => Assert.Equal(3UL, t.Passes));
            Assert.All(memory, t => Assert.Equal(3UL * 3, t.Progress));   // three slices in each of three passes
            var cpu = r.Tasks.Single(t => t.Kind == "cpu");
            // one chunk after each memory slice, and the chunk in which it found itself the last task
            Assert.Equal((ulong)memTasks * 9 + 1, cpu.Progress);
            Assert.Equal(cpu.Progress * chunk, program.CpuIterationsDone(r.Vcpu));
            Assert.All(r.Tasks, t => Assert.True(t.DoneTsc > r.StartTsc, $"task {t.Kind} has no completion time"));
        }
        Assert.Equal(3, results[vcpus - 1].Tasks[^1].Mismatches);
        Assert.Equal(3, results.Sum(r => r.Mismatches));
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
