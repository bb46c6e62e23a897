namespace Faultline.Guest.Tasks;

/// <summary>
/// Where the task kernel (<see cref="TaskKernel"/>) keeps its state, inside the system region (slot 0, always present).
/// Each task has one 4 KiB block: its task control block (TCB) at the bottom, its kernel stack growing down from the
/// top, so a handler finds the current task with <c>rsp &amp; ~0xfff</c> (Linux's old thread_info trick). Each vCPU has
/// a vCPU block (scheduler state, its task table and the 64-byte async-PF area the host writes) and an event log.
/// Only the handlers and the host touch these; the tasks' own code uses registers and one global (the pattern seed).
/// </summary>
public static class TaskLayout
{
    public const int MaxVcpus = 16;
    /// <summary>Idle, the CPU task, and up to <see cref="MaxMemoryTasks"/> memory tasks.</summary>
    public const int MaxTasks = 8;
    public const int MaxMemoryTasks = 4;
    public const ulong Blocks = 0x300000;
    public const ulong BlockSize = 0x1000;
    public const ulong VcpuBlocks = 0x380000;
    public const ulong VcpuBlockSize = 0x400;
    public const ulong Globals = 0x384000;
    public const ulong Logs = 0x388000;
    public const ulong LogBytes = (GuestLayout.SystemSize - Logs) / MaxVcpus;
    public const int LogEntryBytes = 16;
    public const int LogEntries = (int)(LogBytes / LogEntryBytes);

    /// <summary>Task indices: the scheduler runs memory tasks first (round robin), then the CPU task, then idle.</summary>
    public const int IdleTask = 0, CpuTask = 1, FirstMemoryTask = 2;

    // task control block
    public const int TcbVcpu = 0x00, TcbSaved = 0x08, TcbState = 0x10, TcbToken = 0x18, TcbIndex = 0x20, TcbDoneTsc = 0x28,
        TcbWoken = 0x30, TcbMismatches = 0x38,
        // continuous mode: where the memory task's pass starts, passes done, the pass after which it stops, yields (CPU task: chunks done)
        TcbStart = 0x40, TcbPasses = 0x48, TcbStopAfter = 0x50, TcbProgress = 0x58;
    public const ulong Runnable = 0, Parked = 1, Done = 2;

    // vCPU block
    public const int VbCurrent = 0x00, VbTaskCount = 0x08, VbRemaining = 0x10, VbTss = 0x18, VbLogNext = 0x28, VbLogEnd = 0x30,
        VbEnable = 0x40, VbVector = 0x48, VbStartTsc = 0x50, VbNotPresent = 0x58, VbReady = 0x60, VbSpurious = 0x68, VbBurst = 0x70, VbLastMemory = 0x78,
        VbTasks = 0x80, VbApf = 0x200;

    /// <summary>Global: the pattern seed the memory tasks check against (qword at GPA a holds a + seed).</summary>
    public const ulong SeedAddress = Globals;
    /// <summary>Global: continuous mode's CPU chunk (iterations between two yields of the CPU task).</summary>
    public const ulong ChunkAddress = Globals + 8;
    public const int GlobalsBytes = 16;
    /// <summary>Continuous mode: a memory task yields each time its address crosses a multiple of this (1 MiB: 256 pages), its time slice.</summary>
    public const ulong SliceBytes = 0x100000;

    /// <summary>Log entry kinds (bits 32.. of the entry's first qword; the token in bits 0..31; the TSC in the second).</summary>
    public const ulong LogNotPresent = 1, LogTaskRunning = 2;

    public static ulong Block(int vcpu, int task) => Blocks + ((ulong)vcpu * MaxTasks + (ulong)task) * BlockSize;
    public static ulong VcpuBlock(int vcpu) => VcpuBlocks + (ulong)vcpu * VcpuBlockSize;
    public static ulong ApfArea(int vcpu) => VcpuBlock(vcpu) + VbApf;
    public static ulong Log(int vcpu) => Logs + (ulong)vcpu * LogBytes;
}
