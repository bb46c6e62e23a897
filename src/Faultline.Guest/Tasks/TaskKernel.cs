using Faultline.Kvm;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using static Faultline.Guest.Tasks.TaskLayout;

namespace Faultline.Guest.Tasks;

/// <summary>
/// A tiny preemptive guest kernel with one scheduler per vCPU and the x86 paravirtual async page fault ABI (Linux's
/// kvm_para.h), generated with Iced. Tasks run at CPL3 (native on this host); the handlers run at CPL0, which this host
/// emulates at about 1.3 µs an instruction, so each is a few dozen instructions:
/// <list type="bullet">
/// <item>#PF (14): if the async-PF area's flags word is 1 ("page not present"), clear it, park the current task on the
/// token in CR2 and switch to the next runnable task; any other #PF is a real one, reported to the host.</item>
/// <item>the "page ready" vector: read the token from the area, clear it, acknowledge with
/// <c>wrmsr MSR_KVM_ASYNC_PF_ACK</c>, make the task parked on that token runnable, and switch to it when the interrupted
/// task is not a memory task (the CPU task or idle).</item>
/// <item><c>ud2</c> with RAX = 0: the current task is done (its TSC is kept); when every task is, done() to the host.
/// RAX = 1: the current task found a page with the wrong contents (counted; the task goes on after the <c>ud2</c>).
/// Continuous mode (a migrated guest that runs until told to stop): RAX = 2, yield (counted as the task's progress; a
/// memory task lets the CPU task run, the CPU task lets the memory tasks run, and ends when it is the last task left);
/// RAX = 3, a memory task's pass is done (counted; the task ends after the pass the host set, else gets the start of
/// its next pass in RAX).</item>
/// </list>
/// Tasks: idle (CPL0 <c>sti; hlt</c>, run only when nothing else can), one CPU-bound task (<c>dec rbx; jnz</c>, RBX
/// iterations) and up to four memory tasks that read and check every page of their range. The scheduler runs a
/// runnable memory task first (round robin among them), so that its next fetch starts as soon as it can run, then the
/// CPU task, then idle. (Highest index first, the first version, starved a woken low-numbered memory task behind the
/// others: 50–190 ms from its "page ready" to running, at 30 µs and four tasks.)
/// <para>Registers: handlers save and restore RAX, RCX, RDX, RSI, RDI, RBP on the task's own kernel stack (the tasks
/// may use them freely); the others belong to one task each and are never saved: RBX the CPU task's, (R8, R9),
/// (R10, R11), (R12, R13), (R14, R15) memory tasks 0–3's (current address, end). A switch stores RSP in the TCB, loads
/// the next task's and points TSS.RSP0 at the next task's block.</para>
/// </summary>
public sealed partial class TaskKernel
{
    public const byte DefaultReadyVector = 0xEC;
    /// <summary>
    /// The tasks' one system call: <c>ud2</c> (#UD), RAX = <see cref="CallDone"/>, <see cref="CallMismatch"/>, <see cref="CallYield"/> or <see cref="CallPass"/>. This
    /// host's PVM answers <c>int n</c> at CPL3 with #UD itself (measured: as for <c>sti</c>, <c>hlt</c>, <c>out</c>, which
    /// give #GP), so the trap is the instruction that means #UD everywhere.
    /// </summary>
    public const int CallVector = 6;
    public const int CallDone = 0, CallMismatch = 1, CallYield = 2, CallPass = 3;
    public const string BootRoutine = "tasks_boot", IdleRoutine = "tasks_idle", CpuRoutine = "tasks_cpu", BurstRoutine = "tasks_burst",
        CpuLoopRoutine = "tasks_cpu_loop";
    /// <summary>The length of the burst task's first-pass access (<c>mov rax,[r8]</c>), which the #PF handler skips in burst mode.</summary>
    public const int BurstAccessLength = 3;
    public static string MemoryRoutine(int i) => $"tasks_mem{i}";
    /// <summary>Continuous mode's memory task <paramref name="i"/>: passes over its range until told to stop.</summary>
    public static string ScanRoutine(int i) => $"tasks_scan{i}";

    /// <summary>The register pair (address, end) of memory task <paramref name="i"/>.</summary>
    internal static (AssemblerRegister64 At, AssemblerRegister64 End) MemoryRegisters(int i) => i switch
    {
        0 => (r8, r9), 1 => (r10, r11), 2 => (r12, r13), 3 => (r14, r15),
        _ => throw new ArgumentOutOfRangeException(nameof(i), i, $"0..{MaxMemoryTasks - 1}"),
    };

    private Assembler? _a;
    private Label _schedule, _switch;
    private Label _parkOnToken, _enterFirst;   // shared with the arm protocol's handlers (ArmTaskHandlers)

    /// <param name="readyVector">The "page ready" vector (x86) or PPI (arm).</param>
    /// <param name="protocol">The async-PF guest ABI the kernel speaks; arm's handlers are <see cref="ArmTaskHandlers"/>.</param>
    public TaskKernel(byte readyVector = DefaultReadyVector, TaskProtocol protocol = TaskProtocol.X86)
    {
        if (readyVector < 32) throw new ArgumentOutOfRangeException(nameof(readyVector), readyVector, "an interrupt vector, 32..255");
        ReadyVector = readyVector;
        Kernel = new GuestKernel();
        Kernel.SetHandler(14, a => { Labels(a); PageFault(a); });
        Kernel.SetHandler(readyVector, a => { Labels(a); PageReady(a); });
        Kernel.SetHandler(CallVector, a => { Labels(a); SystemCall(a); });
        Kernel.AddRoutine(BootRoutine, a => { Labels(a); Boot(a); });
        Kernel.AddRoutine(IdleRoutine, Idle);
        Kernel.AddRoutine(CpuRoutine, CpuTaskCode);
        Kernel.AddRoutine(BurstRoutine, BurstTaskCode);
        Kernel.AddRoutine(CpuLoopRoutine, CpuLoopTaskCode);
        for (var i = 0; i < MaxMemoryTasks; i++)
        {
            var task = i;
            Kernel.AddRoutine(MemoryRoutine(i), a => MemoryTaskCode(a, task));
            Kernel.AddRoutine(ScanRoutine(i), a => ScanTaskCode(a, task));
        }
        Protocol = protocol;
        if (protocol == TaskProtocol.Arm) ArmTaskHandlers.Install(this);
    }

    public TaskProtocol Protocol { get; }
    /// <summary>The routine a vCPU boots into (it enables async PF in the kernel's protocol, then enters the first task).</summary>
    public string BootEntry => Protocol == TaskProtocol.Arm ? ArmTaskHandlers.BootRoutine : BootRoutine;

    public byte ReadyVector { get; }
    /// <summary>The kernel to build the machine with (<see cref="MachineConfig.Kernel"/>).</summary>
    public GuestKernel Kernel { get; }

    private void Labels(Assembler a)
    {
        if (ReferenceEquals(a, _a)) return;
        _a = a;
        _schedule = a.CreateLabel("schedule");
        _switch = a.CreateLabel("switch");
        _parkOnToken = a.CreateLabel("park_on_token");
        _enterFirst = a.CreateLabel("enter_first");
    }

    private static void Save(Assembler a)
    {
        a.push(rax); a.push(rcx); a.push(rdx); a.push(rsi); a.push(rdi); a.push(rbp);
    }

    private static void RestoreAndReturn(Assembler a)
    {
        a.pop(rbp); a.pop(rdi); a.pop(rsi); a.pop(rdx); a.pop(rcx); a.pop(rax);
        a.iretq();
    }

    /// <summary>RSI = the current task's TCB, RBP = this vCPU's block.</summary>
    private static void Current(Assembler a)
    {
        a.mov(rsi, rsp);
        a.and(rsi, unchecked((int)~(BlockSize - 1)));
        a.mov(rbp, __qword_ptr[rsi + TcbVcpu]);
    }

    /// <summary>Appends (RCX = kind &lt;&lt; 32 | token, TSC) to the vCPU's log unless it is full. Uses RAX, RDX, RDI; RBP = vCPU block.</summary>
    private static void Log(Assembler a, Label? next = null)
    {
        var skip = next ?? a.CreateLabel();
        a.mov(rdi, __qword_ptr[rbp + VbLogNext]);
        a.cmp(rdi, __qword_ptr[rbp + VbLogEnd]);
        a.jae(skip);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        a.mov(__qword_ptr[rdi], rcx);
        a.mov(__qword_ptr[rdi + 8], rax);
        a.add(rdi, LogEntryBytes);
        a.mov(__qword_ptr[rbp + VbLogNext], rdi);
        if (next is null) a.Label(ref skip);   // else the caller places it
    }

    private void PageFault(Assembler a)
    {
        var real = a.CreateLabel();
        Save(a);
        Current(a);
        a.cmp(__dword_ptr[rbp + VbApf + KvmPvAsyncPf.FlagsOffset], (int)KvmPvAsyncPf.ReasonPageNotPresent);
        a.jne(real);
        a.mov(__dword_ptr[rbp + VbApf + KvmPvAsyncPf.FlagsOffset], 0);   // cleared before anything could take a real #PF
        var park = a.CreateLabel();
        a.cmp(__qword_ptr[rbp + VbBurst], 0);
        a.je(park);
        // burst mode (a test's guest that does not wait): count and log the token, skip the access, run on
        a.inc(__qword_ptr[rbp + VbNotPresent]);
        a.mov(rcx, cr2);
        a.bts(rcx, 32);
        Log(a);
        a.add(__qword_ptr[rsp + 48], BurstAccessLength);
        RestoreAndReturn(a);
        a.Label(ref park);
        a.mov(rcx, cr2);                                  // the token
        a.Label(ref _parkOnToken);                        // RCX = token, RSI = TCB, RBP = vCPU block
        a.mov(__qword_ptr[rsi + TcbToken], rcx);
        a.mov(__qword_ptr[rsi + TcbState], (int)Parked);
        a.inc(__qword_ptr[rbp + VbNotPresent]);
        a.bts(rcx, 32);                                   // LogNotPresent << 32
        Log(a);
        a.jmp(_schedule);

        // a real #PF: report it as the default handler does (vector 14, RIP, CR2) and stop
        a.Label(ref real);
        RestoreRegistersOnly(a);
        a.mov(rcx, __qword_ptr[rsp]);
        a.mov(rdx, cr2);
        a.xor(ebx, ebx);
        a.mov(eax, 14);
        a.mov(rsi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Exception);
        a.mov(__qword_ptr[rsi], rax);
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.jmp(hang);

        // schedule: RSI = current TCB (not runnable), RBP = vCPU block. The next runnable memory task after the last one
        // picked (round robin: a woken task is not starved by the others), else the CPU task, else idle (always runnable).
        a.Label(ref _schedule);
        var scan = a.CreateLabel(); var noWrap = a.CreateLabel(); var cpu = a.CreateLabel(); var found = a.CreateLabel();
        a.mov(rax, __qword_ptr[rbp + VbTaskCount]);
        a.lea(rcx, __qword_ptr[rax - FirstMemoryTask]);  // memory tasks to look at
        a.test(rcx, rcx);
        a.jz(cpu);
        a.mov(rdx, __qword_ptr[rbp + VbLastMemory]);
        a.Label(ref scan);
        a.inc(rdx);
        a.cmp(rdx, rax);
        a.jb(noWrap);
        a.mov(edx, FirstMemoryTask);
        a.Label(ref noWrap);
        a.mov(rdi, __qword_ptr[rbp + rdx * 8 + VbTasks]);
        a.cmp(__qword_ptr[rdi + TcbState], (int)Runnable);
        a.je(found);
        a.dec(rcx);
        a.jnz(scan);
        a.Label(ref cpu);
        a.mov(rdi, __qword_ptr[rbp + CpuTask * 8 + VbTasks]);
        a.cmp(__qword_ptr[rdi + TcbState], (int)Runnable);
        a.je(_switch);
        a.mov(rdi, __qword_ptr[rbp + IdleTask * 8 + VbTasks]);
        a.jmp(_switch);
        a.Label(ref found);
        a.mov(__qword_ptr[rbp + VbLastMemory], rdx);

        // switch: RSI = current TCB, RDI = next TCB, RBP = vCPU block
        a.Label(ref _switch);
        var go = a.CreateLabel();
        a.mov(__qword_ptr[rsi + TcbSaved], rsp);
        a.mov(__qword_ptr[rbp + VbCurrent], rdi);
        a.mov(rsp, __qword_ptr[rdi + TcbSaved]);
        a.lea(rax, __qword_ptr[rdi + (int)BlockSize]);
        a.mov(rdx, __qword_ptr[rbp + VbTss]);
        a.mov(__qword_ptr[rdx + 4], rax);                 // TSS.RSP0: the next entry from CPL3 lands on its stack
        a.mov(rcx, __qword_ptr[rdi + TcbWoken]);          // woken by a "page ready": log when it runs again
        a.test(rcx, rcx);
        a.jz(go);
        a.mov(__qword_ptr[rdi + TcbWoken], 0);
        a.bts(rcx, 33);                                   // LogTaskRunning << 32
        Log(a, go);
        a.Label(ref go);
        RestoreAndReturn(a);
    }

    private static void RestoreRegistersOnly(Assembler a)
    {
        a.pop(rbp); a.pop(rdi); a.pop(rsi); a.pop(rdx); a.pop(rcx); a.pop(rax);
    }

    private void PageReady(Assembler a)
    {
        var find = a.CreateLabel(); var spurious = a.CreateLabel(); var back = a.CreateLabel();
        Save(a);
        Current(a);
        if (Protocol == TaskProtocol.Arm) ArmTaskHandlers.TakeReady(a);   // EDI = token, the block cleared, IRQ_ACK
        else
        {
            a.mov(edi, __dword_ptr[rbp + VbApf + KvmPvAsyncPf.TokenOffset]);   // token
            a.mov(__dword_ptr[rbp + VbApf + KvmPvAsyncPf.TokenOffset], 0);   // the slot is free for the next "page ready"
            a.mov(ecx, KvmPvAsyncPf.MsrAck);
            a.mov(eax, 1);
            a.xor(edx, edx);
            a.wrmsr();
        }
        a.inc(__qword_ptr[rbp + VbReady]);
        a.mov(rcx, __qword_ptr[rbp + VbTaskCount]);
        a.Label(ref find);
        a.dec(rcx);
        a.js(spurious);
        a.mov(rdx, __qword_ptr[rbp + rcx * 8 + VbTasks]);
        a.cmp(__qword_ptr[rdx + TcbState], (int)Parked);
        a.jne(find);
        a.cmp(__qword_ptr[rdx + TcbToken], rdi);
        a.jne(find);
        a.mov(__qword_ptr[rdx + TcbState], (int)Runnable);
        a.mov(__qword_ptr[rdx + TcbWoken], rdi);
        a.cmp(__qword_ptr[rsi + TcbIndex], FirstMemoryTask);
        a.jae(back);                                      // a memory task runs: it keeps the vCPU
        a.mov(rdi, rdx);
        a.jmp(_switch);
        a.Label(ref spurious);
        a.inc(__qword_ptr[rbp + VbSpurious]);
        a.Label(ref back);
        RestoreAndReturn(a);
    }

    private void SystemCall(Assembler a)
    {
        var notMismatch = a.CreateLabel(); var done = a.CreateLabel(); var pass = a.CreateLabel(); var yield = a.CreateLabel(); var memoryYield = a.CreateLabel();
        Save(a);
        Current(a);
        a.mov(rax, __qword_ptr[rsp + 40]);                  // the task's RAX: the call
        a.cmp(rax, CallMismatch);
        a.jne(notMismatch);
        a.inc(__qword_ptr[rsi + TcbMismatches]);
        a.add(__qword_ptr[rsp + 48], 2);                    // past the ud2
        RestoreAndReturn(a);
        a.Label(ref notMismatch);
        a.cmp(rax, CallYield);
        a.je(yield);
        a.cmp(rax, CallPass);
        a.je(pass);
        a.Label(ref done);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        a.mov(__qword_ptr[rsi + TcbDoneTsc], rax);
        a.mov(__qword_ptr[rsi + TcbState], (int)Done);
        a.dec(__qword_ptr[rbp + VbRemaining]);
        a.jnz(_schedule);
        a.mov(rdi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Done);
        a.mov(__qword_ptr[rdi], 0);
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.jmp(hang);

        // pass (a memory task ended a pass): counted; done after the pass the host set, else RAX = where the next starts
        a.Label(ref pass);
        a.add(__qword_ptr[rsp + 48], 2);
        a.mov(rax, __qword_ptr[rsi + TcbPasses]);
        a.inc(rax);
        a.mov(__qword_ptr[rsi + TcbPasses], rax);
        a.cmp(rax, __qword_ptr[rsi + TcbStopAfter]);
        a.jae(done);
        a.mov(rax, __qword_ptr[rsi + TcbStart]);
        a.mov(__qword_ptr[rsp + 40], rax);
        RestoreAndReturn(a);

        // yield (end of a memory task's slice, of a CPU chunk): a memory task hands the vCPU to the CPU task if it can
        // run; the CPU task to the next memory task (the scheduler), or ends once it is the last task left
        a.Label(ref yield);
        a.add(__qword_ptr[rsp + 48], 2);
        a.inc(__qword_ptr[rsi + TcbProgress]);
        a.cmp(__qword_ptr[rsi + TcbIndex], CpuTask);
        a.jne(memoryYield);
        a.cmp(__qword_ptr[rbp + VbRemaining], 1);
        a.je(done);
        a.jmp(_schedule);
        a.Label(ref memoryYield);
        a.mov(rdi, __qword_ptr[rbp + CpuTask * 8 + VbTasks]);
        a.cmp(__qword_ptr[rdi + TcbState], (int)Runnable);
        a.je(_switch);
        a.jmp(_schedule);
    }

    /// <summary>CPL0, RBP = vCPU block: enables async PF if the host asked (vector first, then the area), then enters the first task.</summary>
    private void Boot(Assembler a)
    {
        a.mov(rax, __qword_ptr[rbp + VbEnable]);
        a.test(rax, rax);
        a.jz(_enterFirst);
        a.mov(ecx, KvmPvAsyncPf.MsrInterrupt);
        a.mov(eax, __dword_ptr[rbp + VbVector]);
        a.xor(edx, edx);
        a.wrmsr();
        a.mov(ecx, KvmPvAsyncPf.MsrEnable);
        a.mov(rax, __qword_ptr[rbp + VbEnable]);
        a.mov(rdx, rax);
        a.shr(rdx, 32);
        a.wrmsr();
        a.Label(ref _enterFirst);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        a.mov(__qword_ptr[rbp + VbStartTsc], rax);
        a.mov(rdi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Report);
        a.mov(__qword_ptr[rdi], rax);                     // report(TSC): the host pairs it with its clock
        a.mov(rdi, __qword_ptr[rbp + VbCurrent]);
        a.mov(rsp, __qword_ptr[rdi + TcbSaved]);
        RestoreAndReturn(a);
    }

    // the pieces the arm protocol's handlers (ArmTaskHandlers) share with these

    /// <summary>The labels of this kernel's assembler: the scheduler, the task switch, the #PF handler's park (RCX = token), the boot's entry into the first task.</summary>
    internal (Label Schedule, Label Switch, Label ParkOnToken, Label EnterFirst) SharedLabels(Assembler a)
    {
        Labels(a);
        return (_schedule, _switch, _parkOnToken, _enterFirst);
    }

    internal static void SaveRegisters(Assembler a) => Save(a);
    internal static void FindCurrent(Assembler a) => Current(a);
}
