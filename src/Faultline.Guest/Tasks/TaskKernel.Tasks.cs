using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using static Faultline.Guest.Tasks.TaskLayout;

namespace Faultline.Guest.Tasks;

/// <summary>
/// The tasks' own code (CPL3, except idle): what runs between the kernel's handlers. Every task keeps its state in the
/// registers it owns (see <see cref="TaskKernel"/>) and talks to the kernel with <c>ud2</c> system calls.
/// </summary>
public sealed partial class TaskKernel
{
    private static void Idle(Assembler a)
    {
        var l = a.CreateLabel();
        a.Label(ref l);
        a.sti();
        a.hlt();
        a.jmp(l);
    }

    private static void CpuTaskCode(Assembler a)
    {
        var l = a.CreateLabel();
        a.Label(ref l);
        a.dec(rbx);
        a.jnz(l);
        Call(a, CallDone);
    }

    /// <summary>
    /// Burst mode's one memory task: a first pass touches every page of [R8, R9) without waiting (the #PF handler skips
    /// each not-present access), so that many async faults are outstanding at once; then it turns burst mode off (RBP =
    /// vCPU block, set by the host in the task's saved registers) and checks every page from R10 as a memory task does.
    /// </summary>
    private static void BurstTaskCode(Assembler a)
    {
        var first = a.CreateLabel();
        a.Label(ref first);
        a.mov(rax, __qword_ptr[r8]);                      // BurstAccessLength bytes
        a.add(r8, 4096);
        a.cmp(r8, r9);
        a.jb(first);
        a.mov(__qword_ptr[rbp + VbBurst], 0);
        a.mov(r8, r10);
        CheckPages(a, r8, r9);
    }

    /// <summary>Reads and checks every page of [at, end), one qword each (a wrong one is counted), then ends the task.</summary>
    private static void CheckPages(Assembler a, AssemblerRegister64 at, AssemblerRegister64 end)
    {
        var loop = a.CreateLabel(); var done = a.CreateLabel();
        a.cmp(at, end);
        a.jae(done);
        a.Label(ref loop);
        CheckPage(a, at);
        a.add(at, 4096);
        a.cmp(at, end);
        a.jb(loop);
        a.Label(ref done);
        Call(a, CallDone);
    }

    private static void MemoryTaskCode(Assembler a, int task)
    {
        var (at, end) = MemoryRegisters(task);
        CheckPages(a, at, end);
    }

    /// <summary>
    /// Continuous mode's memory task: checks [at, end) page by page, yields at every <see cref="TaskLayout.SliceBytes"/>
    /// boundary, and at the end of each pass asks the kernel where the next one starts (RAX; the call does not return
    /// once the pass the host set is done).
    /// </summary>
    private static void ScanTaskCode(Assembler a, int task)
    {
        var (at, end) = MemoryRegisters(task);
        var scan = a.CreateLabel(); var loop = a.CreateLabel(); var next = a.CreateLabel(); var pass = a.CreateLabel();
        a.Label(ref scan);
        a.cmp(at, end);
        a.jae(pass);
        a.Label(ref loop);
        CheckPage(a, at);
        a.add(at, 4096);
        a.mov(rax, at);
        a.test(eax, (int)(SliceBytes - 1));
        a.jnz(next);
        Call(a, CallYield);
        a.Label(ref next);
        a.cmp(at, end);
        a.jb(loop);
        a.Label(ref pass);
        Call(a, CallPass);
        a.mov(at, rax);
        a.jmp(scan);
    }

    /// <summary>Continuous mode's CPU task: chunks of <c>dec rbx; jnz</c> (the chunk at <see cref="TaskLayout.ChunkAddress"/>), a yield after each.</summary>
    private static void CpuLoopTaskCode(Assembler a)
    {
        var chunk = a.CreateLabel(); var l = a.CreateLabel();
        a.Label(ref chunk);
        a.mov(rcx, ChunkAddress);
        a.mov(rbx, __qword_ptr[rcx]);
        a.Label(ref l);
        a.dec(rbx);
        a.jnz(l);
        Call(a, CallYield);
        a.jmp(chunk);
    }

    /// <summary>Reads the page at <paramref name="at"/> (the access that may find it still on the wire) and counts it if its first qword is not the pattern's.</summary>
    private static void CheckPage(Assembler a, AssemblerRegister64 at)
    {
        var ok = a.CreateLabel();
        a.mov(rax, __qword_ptr[at]);
        a.sub(rax, at);
        a.mov(rdx, SeedAddress);
        a.cmp(rax, __qword_ptr[rdx]);
        a.je(ok);
        Call(a, CallMismatch);
        a.Label(ref ok);
    }

    private static void Call(Assembler a, int call)
    {
        a.mov(eax, call);
        a.ud2();
    }
}
