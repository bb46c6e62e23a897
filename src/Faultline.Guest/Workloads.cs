using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Faultline.Guest;

/// <summary>
/// Generates the workloads' user code (run at CPL3 by default, CPL0 on request). Entry registers:
/// RDI start, RSI end, RDX seed (pattern: qword at GPA a holds a + seed), RCX qwords per page, RBP second seed;
/// random order: R8 first index, R12 index mask, R13 increment, RBX page count, R11 iterations (multiplier is an immediate).
/// The loops use no stack and no SSE. The sequential one-qword write with seed 0 is the refpaging loop itself.
/// </summary>
internal static class Workloads
{
    public static (byte[] Code, Dictionary<(Workload, AccessOrder), ulong> Entries) Build(ulong rip)
    {
        var a = new Assembler(64);
        var entries = new Dictionary<(Workload, AccessOrder), Label>();
        foreach (var w in Enum.GetValues<Workload>())
            foreach (var o in Enum.GetValues<AccessOrder>())
            {
                var l = a.CreateLabel($"{w}_{o}");
                a.Label(ref l);
                entries[(w, o)] = l;
                Emit(a, w, o);
            }
        var (bytes, result) = CodeBlob.Assemble(a, rip);
        return (bytes, entries.ToDictionary(e => e.Key, e => result.GetLabelRIP(e.Value)));
    }

    private static void Emit(Assembler a, Workload w, AccessOrder o)
    {
        switch (w)
        {
            case Workload.Spin:
            {
                var l = a.CreateLabel(); a.xor(ebx, ebx); a.Label(ref l); a.inc(rbx); a.jmp(l);
                return;
            }
            case Workload.TouchOnce:
                a.mov(rax, __qword_ptr[rdi]);
                Call(a, GuestOp.Report, rax);
                a.lea(r9, __qword_ptr[rdi + rdx]);
                a.mov(__qword_ptr[rdi], r9);
                Call(a, GuestOp.Done, rax);
                Halt(a);
                return;
            case Workload.ExitTour:
                a.mov(rax, rdx); a.@out(0x10, al);
                a.@in(al, 0x11); a.movzx(rax, al); Call(a, GuestOp.Report, rax);
                a.mov(rax, __qword_ptr[rsi]); Call(a, GuestOp.Report, rax);
                a.hlt();
                a.xor(eax, eax); Call(a, GuestOp.Done, rax);
                Halt(a);
                return;
        }
        // page loops: r10 = current page address, r9 = result accumulator
        a.xor(r9d, r9d);
        if (o == AccessOrder.Sequential && w == Workload.Write)
        {
            // fast path: one qword per page with seed 0 is exactly "mov [rdi],rdi" (refpaging's loop)
            var general = a.CreateLabel(); var fast = a.CreateLabel(); var end = a.CreateLabel();
            a.cmp(rcx, 1); a.jne(general); a.test(rdx, rdx); a.jne(general);
            a.mov(r9, rsi); a.sub(r9, rdi); a.shr(r9, 12);
            a.Label(ref fast);
            a.mov(__qword_ptr[rdi], rdi); a.add(rdi, 4096); a.cmp(rdi, rsi); a.jb(fast);
            a.jmp(end);
            a.Label(ref general);
            SequentialLoop(a, w);
            a.nop(); // one label per instruction: SequentialLoop ends on its own label
            a.Label(ref end);
        }
        else if (o == AccessOrder.Sequential) SequentialLoop(a, w);
        else RandomLoop(a, w);
        Call(a, GuestOp.Done, r9);
        Halt(a);
    }

    private static void SequentialLoop(Assembler a, Workload w)
    {
        var page = a.CreateLabel(); var done = a.CreateLabel();
        a.cmp(rdi, rsi); a.jae(done);
        a.Label(ref page);
        a.mov(r10, rdi);
        TouchPage(a, w);
        a.add(rdi, 4096); a.cmp(rdi, rsi); a.jb(page);
        a.Label(ref done);
    }

    private static void RandomLoop(Assembler a, Workload w)
    {
        var loop = a.CreateLabel(); var skip = a.CreateLabel(); var done = a.CreateLabel();
        a.test(r11, r11); a.je(done);
        a.Label(ref loop);
        a.cmp(r8, rbx); a.jae(skip);
        a.mov(r10, r8); a.shl(r10, 12); a.add(r10, rdi);
        TouchPage(a, w);
        a.Label(ref skip);
        a.imul(r8, r8, (int)WorkloadArgs.LcgMultiplier); a.add(r8, r13); a.and(r8, r12);
        a.dec(r11); a.jne(loop);
        a.Label(ref done);
    }

    /// <summary>Touches RCX qwords of the page at R10 (uses RAX, R14, R15; R9 is the result: pages written, sum read, mismatches).</summary>
    private static void TouchPage(Assembler a, Workload w)
    {
        var q = a.CreateLabel(); var ok = a.CreateLabel();
        a.mov(r15, r10);
        a.mov(r14, rcx);
        a.Label(ref q);
        switch (w)
        {
            case Workload.Write:
                a.lea(rax, __qword_ptr[r15 + rdx]); a.mov(__qword_ptr[r15], rax);
                break;
            case Workload.Read:
                a.add(r9, __qword_ptr[r15]);
                break;
            case Workload.Verify:
            case Workload.VerifyThenWrite:
            {
                a.lea(rax, __qword_ptr[r15 + rdx]); a.cmp(__qword_ptr[r15], rax); a.je(ok); a.inc(r9);
                a.Label(ref ok);
                if (w == Workload.VerifyThenWrite) { a.lea(rax, __qword_ptr[r15 + rbp]); a.mov(__qword_ptr[r15], rax); }
                break;
            }
        }
        a.add(r15, 8); a.dec(r14); a.jne(q);
        if (w == Workload.Write) a.inc(r9); // pages written
    }

    /// <summary>Emits a guest ABI call: a qword store of <paramref name="value"/> to the doorbell slot of <paramref name="op"/>.</summary>
    internal static void Call(Assembler a, GuestOp op, AssemblerRegister64 value)
    {
        a.mov(rax, value == rax ? rax : value);
        a.mov(r15, GuestLayout.Doorbell + 8 * (ulong)op);
        a.mov(__qword_ptr[r15], rax);
    }

    private static void Halt(Assembler a)
    {
        var l = a.CreateLabel(); a.Label(ref l); a.jmp(l);
    }
}
