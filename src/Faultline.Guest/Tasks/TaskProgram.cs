using System.Buffers.Binary;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using static Faultline.Guest.Tasks.TaskLayout;

namespace Faultline.Guest.Tasks;

/// <summary>What the task kernel runs on each vCPU.</summary>
/// <param name="MemoryTasks">Memory tasks per vCPU (0..4): each reads and checks its share of the vCPU's pages.</param>
/// <param name="CpuIterations">The CPU task's work: iterations of <c>dec rbx; jnz</c> (at least 1).</param>
/// <param name="AsyncPf">Whether the guest enables async page faults (writes the MSRs at boot).</param>
/// <param name="Seed">The page pattern's seed (qword at GPA a holds a + seed).</param>
public sealed record TaskConfig(int MemoryTasks, ulong CpuIterations, bool AsyncPf, ulong Seed)
{
    /// <summary>Run the memory tasks with interrupts off (RFLAGS.IF clear): no async page fault may be delivered to them.</summary>
    public bool MemoryTasksInterruptsOff { get; init; }
    /// <summary>
    /// Burst mode (tests): one memory task touches all its pages first without waiting for any (the guest's #PF handler
    /// skips a not-present access instead of parking), then checks them all. Needs exactly one memory task.
    /// </summary>
    public bool Burst { get; init; }
    /// <summary>
    /// Continuous mode (a guest that runs until the host stops it, as a migrated one): each memory task checks its range
    /// in passes, yielding to the CPU task every <see cref="TaskLayout.SliceBytes"/>, until the pass the host set
    /// (<see cref="TaskProgram.StopAfterMorePasses"/>; none at boot); the CPU task works in chunks of
    /// <see cref="CpuIterations"/>, yielding after each, and ends when the memory tasks have.
    /// </summary>
    public bool Continuous { get; init; }

    public void Validate(int vcpus)
    {
        if (MemoryTasks is < 0 or > MaxMemoryTasks) throw new UsageException($"memory tasks must be within 0..{MaxMemoryTasks}, not {MemoryTasks}");
        if (CpuIterations < 1) throw new UsageException("the CPU task needs at least one iteration");
        if (Burst && MemoryTasks != 1) throw new UsageException("burst mode runs exactly one memory task");
        if (Burst && Continuous) throw new UsageException("burst mode and continuous mode exclude each other");
        if (Continuous && MemoryTasks < 1) throw new UsageException("continuous mode needs at least one memory task");
        if (vcpus > TaskLayout.MaxVcpus) throw new UsageException($"the task kernel runs at most {TaskLayout.MaxVcpus} vCPUs, not {vcpus}");
    }
}

/// <summary>One task's outcome.</summary>
/// <param name="Passes">Continuous mode: passes a memory task completed.</param>
/// <param name="Progress">Continuous mode: yields (the CPU task: chunks done; a memory task: slices).</param>
/// <param name="State">Runnable, parked (on <paramref name="Token"/>) or done, as the guest's scheduler has it.</param>
public readonly record struct TaskResult(int Index, string Kind, ulong DoneTsc, long Mismatches, ulong Passes, ulong Progress, string State = "runnable", uint Token = 0,
    ulong StopAfter = ulong.MaxValue)
{
    public override string ToString() => (State == "parked" ? $"{Kind} parked on 0x{Token:x}" : $"{Kind} {State}")
        + (Kind == "cpu" ? $", {Progress} chunks" : $", pass {Passes}{(StopAfter != ulong.MaxValue ? $" of {StopAfter}" : "")}, {Progress} slices");
}

/// <summary>An entry of a vCPU's event log: an async-PF notification as the guest saw it, with its TSC.</summary>
public readonly record struct TaskLogEntry(ulong Kind, uint Token, ulong Tsc);

/// <summary>What the task kernel recorded on one vCPU.</summary>
public sealed record TaskVcpuResult(int Vcpu, ulong StartTsc, IReadOnlyList<TaskResult> Tasks, long NotPresent, long Ready, long Spurious,
    IReadOnlyList<TaskLogEntry> Log)
{
    public long Mismatches => Tasks.Sum(t => t.Mismatches);
}

/// <summary>
/// One vCPU's part of the task kernel in the system region, as bytes at guest addresses: its task blocks (control
/// blocks and kernel stacks), vCPU block (scheduler state, async-PF area), event log and TSS; vCPU 0's also the
/// globals. With the vCPUs' registers and guest RAM it is everything a paused task-kernel guest is (the kernel's code
/// is generated the same on both sides): what a migration or a snapshot carries with each vCPU.
/// </summary>
public sealed record TaskSystemState(IReadOnlyList<(ulong Gpa, byte[] Bytes)> Ranges)
{
    public long Bytes => Ranges.Sum(r => (long)r.Bytes.Length);
}

/// <summary>
/// The host side of the task kernel (<see cref="TaskKernel"/>): lays out each vCPU's tasks in the system region (TCBs,
/// initial interrupt frames on their kernel stacks, the vCPU block) and boots the vCPU into the kernel's boot routine,
/// which enables async PF if asked and enters the first task. After the run, <see cref="Read"/> collects what the
/// guest recorded. The machine must have been created with <see cref="TaskKernel.Kernel"/>.
/// </summary>
public sealed class TaskProgram
{
    private readonly GuestMachine _m;

    public TaskProgram(GuestMachine machine, TaskKernel kernel, TaskConfig config)
    {
        config.Validate(machine.Config.Vcpus);
        _m = machine; Kernel = kernel; Config = config;
    }

    public TaskKernel Kernel { get; }
    public TaskConfig Config { get; }
    public int TaskCount => FirstMemoryTask + Config.MemoryTasks;

    /// <summary>The pages memory task <paramref name="task"/> of <paramref name="vcpu"/> reads: its share of the vCPU's range.</summary>
    public (ulong Start, ulong End) RangeOf(int vcpu, int task)
    {
        var (s, e) = _m.RangeOf(vcpu);
        var pages = (e.Value - s.Value) >> 12;
        var n = (ulong)Config.MemoryTasks;
        var from = s.Value + (pages * (ulong)task / n << 12);
        var to = s.Value + (pages * (ulong)(task + 1) / n << 12);
        return (from, to);
    }

    /// <summary>Writes every vCPU's tasks and boots it (on the calling thread; before the vCPU threads start).</summary>
    public void Boot()
    {
        var sys = _m.System.Span(new GuestAddress(0), (int)GuestLayout.SystemSize);
        Put(sys, SeedAddress, Config.Seed);
        Put(sys, ChunkAddress, Config.CpuIterations);
        foreach (var vcpu in _m.Vcpus) Boot(vcpu, sys);
    }

    private void Boot(Vcpu vcpu, Span<byte> sys)
    {
        var v = vcpu.Id;
        var vb = VcpuBlock(v);
        sys.Slice((int)vb, (int)VcpuBlockSize).Clear();
        sys.Slice((int)Log(v), (int)LogBytes).Clear();
        var n = TaskCount;
        for (var t = 0; t < n; t++)
        {
            var block = Block(v, t);
            sys.Slice((int)block, (int)BlockSize).Clear();
            var top = block + BlockSize;
            // the initial interrupt frame (RIP, CS, RFLAGS, RSP, SS) and six zeroed saved registers below it
            var frame = top - 40;
            var user = t != IdleTask;
            Put(sys, frame, EntryOf(t));
            Put(sys, frame + 8, user ? GuestLayout.UserCs : GuestLayout.KernelCs);
            var interrupts = user && !(t >= FirstMemoryTask && Config.MemoryTasksInterruptsOff);
            Put(sys, frame + 16, interrupts ? 0x202UL : 0x2UL);
            Put(sys, frame + 24, user ? GuestLayout.UserStackTop(v) - (ulong)t * 0x100 : top - 0x100);
            Put(sys, frame + 32, user ? GuestLayout.UserDs : GuestLayout.KernelDs);
            if (Config.Burst && t == FirstMemoryTask) Put(sys, frame - 48, vb);   // its saved RBP: the vCPU block
            Put(sys, block + TcbVcpu, vb);
            Put(sys, block + TcbSaved, frame - 48);
            Put(sys, block + TcbState, Runnable);
            Put(sys, block + TcbIndex, (ulong)t);
            if (t >= FirstMemoryTask)
            {
                Put(sys, block + TcbStart, RangeOf(v, t - FirstMemoryTask).Start);
                Put(sys, block + TcbStopAfter, ulong.MaxValue);
            }
            Put(sys, vb + VbTasks + (ulong)t * 8, block);
        }
        var first = Block(v, n - 1);
        Put(sys, vb + VbCurrent, first);
        Put(sys, vb + VbTaskCount, (ulong)n);
        Put(sys, vb + VbRemaining, (ulong)(n - 1));   // every task but idle
        Put(sys, vb + VbTss, GuestLayout.Tss(v));
        Put(sys, vb + VbLogNext, Log(v));
        Put(sys, vb + VbLogEnd, Log(v) + (ulong)LogEntries * LogEntryBytes);
        Put(sys, vb + VbEnable, Config.AsyncPf ? ApfArea(v) | (Kernel.Protocol == TaskProtocol.Arm ? ArmPvAsyncPf.Enabled : KvmPvAsyncPf.EnabledWithInterrupt) : 0);
        Put(sys, vb + VbVector, Kernel.ReadyVector);
        Put(sys, vb + VbBurst, Config.Burst ? 1UL : 0);
        Put(sys, vb + VbLastMemory, (ulong)(n - 1));
        Put(sys, GuestLayout.Tss(v) + 4, first + BlockSize);

        vcpu.SetSregs(_m.Image.SpecialRegisters(vcpu.GetSregs(), v, PrivilegeLevel.Kernel));
        var r = new KvmRegs { Rip = _m.Image.RoutineOf(Kernel.BootEntry), Rflags = 2, Rsp = first + BlockSize, Rbp = vb, Rbx = Config.CpuIterations };
        for (var i = 0; i < Config.MemoryTasks; i++)
        {
            var (s, e) = RangeOf(v, i);
            SetMemoryRegisters(ref r, i, s, e);
            if (Config.Burst) r.R10 = s;   // the check pass starts over from here
        }
        vcpu.SetRegs(r);
    }

    private ulong EntryOf(int task) => task switch
    {
        IdleTask => _m.Image.RoutineOf(TaskKernel.IdleRoutine),
        CpuTask => _m.Image.RoutineOf(Config.Continuous ? TaskKernel.CpuLoopRoutine : TaskKernel.CpuRoutine),
        _ when Config.Burst => _m.Image.RoutineOf(TaskKernel.BurstRoutine),
        _ when Config.Continuous => _m.Image.RoutineOf(TaskKernel.ScanRoutine(task - FirstMemoryTask)),
        _ => _m.Image.RoutineOf(TaskKernel.MemoryRoutine(task - FirstMemoryTask)),
    };

    private static void SetMemoryRegisters(ref KvmRegs r, int task, ulong start, ulong end)
    {
        switch (task)
        {
            case 0: r.R8 = start; r.R9 = end; break;
            case 1: r.R10 = start; r.R11 = end; break;
            case 2: r.R12 = start; r.R13 = end; break;
            default: r.R14 = start; r.R15 = end; break;
        }
    }

    /// <summary>The system-region ranges that hold vCPU <paramref name="v"/>'s part of the task kernel (vCPU 0's also the globals).</summary>
    private IEnumerable<(ulong Gpa, int Length)> StateRanges(int v)
    {
        if (v == 0) yield return (Globals, GlobalsBytes);
        yield return (Block(v, 0), (int)(BlockSize * (ulong)TaskCount));
        yield return (VcpuBlock(v), (int)VcpuBlockSize);
        yield return (Log(v), (int)LogBytes);
        yield return (GuestLayout.Tss(v), GuestLayout.TssStride);
    }

    /// <summary>
    /// Copies vCPU <paramref name="v"/>'s part of the task kernel's state out of the system region (that vCPU stopped;
    /// any thread). The event log travels only as far as it is written.
    /// </summary>
    public TaskSystemState Capture(int v)
    {
        var sys = _m.System;
        var logUsed = (int)Math.Clamp((long)Get(sys.Span(new GuestAddress(VcpuBlock(v) + VbLogNext), 8), 0) - (long)Log(v), 0, (long)LogBytes);
        return new TaskSystemState(StateRanges(v)
            .Select(r => (r.Gpa, sys.Span(new GuestAddress(r.Gpa), r.Gpa == Log(v) ? logUsed : r.Length).ToArray())).ToList());
    }

    /// <summary>
    /// Writes vCPU <paramref name="v"/>'s captured part into this machine's system region instead of <see cref="Boot"/>
    /// (the machine built with the same kernel, vCPU count, memory and task count); the caller then restores the vCPU's
    /// registers. Checks that the ranges are the ones this program would capture (the log's up to its size).
    /// </summary>
    public void Restore(int v, TaskSystemState state)
    {
        if (v < 0 || v >= _m.Vcpus.Count) throw new UsageException($"the task kernel's state of vCPU {v} does not match this guest (it has {_m.Vcpus.Count} vCPU(s))");
        var expected = StateRanges(v).ToList();
        if (state.Ranges.Count != expected.Count || state.Ranges.Zip(expected).Any(p => p.First.Gpa != p.Second.Gpa
                || (p.First.Gpa == Log(v) ? p.First.Bytes.Length > p.Second.Length : p.First.Bytes.Length != p.Second.Length)))
            throw new UsageException($"the task kernel's state of vCPU {v} does not match this guest (other vCPU count or task count)");
        foreach (var (gpa, bytes) in state.Ranges) bytes.CopyTo(_m.System.Span(new GuestAddress(gpa), bytes.Length));
    }

    /// <summary>
    /// Continuous mode: every memory task of vCPU <paramref name="v"/> ends after <paramref name="more"/> passes beyond
    /// those it has completed (2 after a restore: the interrupted pass, then one whole pass). Before the vCPU runs again.
    /// </summary>
    public void StopAfterMorePasses(int v, ulong more)
    {
        var sys = _m.System.Span(new GuestAddress(0), (int)GuestLayout.SystemSize);
        for (var t = FirstMemoryTask; t < TaskCount; t++)
        {
            var block = Block(v, t);
            Put(sys, block + TcbStopAfter, Get(sys, block + TcbPasses) + more);
        }
    }

    /// <summary>The fewest passes any memory task of vCPU <paramref name="v"/> has completed so far (continuous mode; any time).</summary>
    public ulong PassesDone(int v)
    {
        var sys = _m.System.Span(new GuestAddress(0), (int)GuestLayout.SystemSize);
        var min = ulong.MaxValue;
        for (var t = FirstMemoryTask; t < TaskCount; t++) min = Math.Min(min, Get(sys, Block(v, t) + TcbPasses));
        return min;
    }

    /// <summary>Continuous mode: the iterations vCPU <paramref name="v"/>'s CPU task has done so far (its chunks × the chunk). Any time, also while it runs.</summary>
    public ulong CpuIterationsDone(int v)
    {
        var chunks = BinaryPrimitives.ReadUInt64LittleEndian(_m.System.Span(new GuestAddress(Block(v, CpuTask) + TcbProgress), 8));   // one aligned load
        return chunks * Config.CpuIterations;
    }

    /// <summary>What the guest recorded on every vCPU (after the run).</summary>
    public IReadOnlyList<TaskVcpuResult> Read()
    {
        var sys = _m.System.Span(new GuestAddress(0), (int)GuestLayout.SystemSize);
        var results = new TaskVcpuResult[_m.Vcpus.Count];
        for (var v = 0; v < results.Length; v++)
        {
            var vb = VcpuBlock(v);
            var tasks = new List<TaskResult>();
            for (var t = 1; t < TaskCount; t++)
            {
                var block = Block(v, t);
                tasks.Add(new TaskResult(t, t == CpuTask ? "cpu" : $"mem{t - FirstMemoryTask}", Get(sys, block + TcbDoneTsc), (long)Get(sys, block + TcbMismatches),
                    Get(sys, block + TcbPasses), Get(sys, block + TcbProgress),
                    Get(sys, block + TcbState) switch { Runnable => "runnable", Parked => "parked", Done => "done", var x => $"state {x}" }, (uint)Get(sys, block + TcbToken),
                    t == CpuTask ? ulong.MaxValue : Get(sys, block + TcbStopAfter)));
            }
            var log = new List<TaskLogEntry>();
            for (var at = Log(v); at < Get(sys, vb + VbLogNext); at += LogEntryBytes)
            {
                var head = Get(sys, at);
                log.Add(new TaskLogEntry(head >> 32, (uint)head, Get(sys, at + 8)));
            }
            results[v] = new TaskVcpuResult(v, Get(sys, vb + VbStartTsc), tasks, (long)Get(sys, vb + VbNotPresent), (long)Get(sys, vb + VbReady),
                (long)Get(sys, vb + VbSpurious), log);
        }
        return results;
    }

    private static void Put(Span<byte> mem, ulong at, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(mem[(int)at..], value);
    private static ulong Get(ReadOnlySpan<byte> mem, ulong at) => BinaryPrimitives.ReadUInt64LittleEndian(mem[(int)at..]);
}
