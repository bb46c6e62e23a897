using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Faultline.Guest;

/// <summary>
/// Generates the workloads' user code (run at CPL3 by default, CPL0 on request). Entry registers:
/// RDI start, RSI end, RDX seed (pattern: qword at GPA a holds a + seed), RCX qwords per page, RBP second seed;
/// random order: R8 first index, R12 index mask, R13 increment, RBX page count, R11 iterations (multiplier is an immediate);
/// hotset order: R8 xorshift64 state, R12 hot start page, R13 drift countdown, RBX page count, R11 accesses (see <see cref="Hotset"/>).
/// The generation program has its own ABI (<see cref="GenerationProgram"/>).
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
            case Workload.Generations:
                GenerationLoop(a, o);
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
        else if (o == AccessOrder.Random) RandomLoop(a, w);
        else HotsetLoop(a, w);
        Call(a, GuestOp.Done, r9);
        Halt(a);
    }

    private static void SequentialLoop(Assembler a, Workload w)
    {
        var page = a.CreateLabel(); var done = a.CreateLabel();
        a.cmp(rdi, rsi); a.jae(done);
        a.Label(ref page);
        a.mov(r10, rdi);
        TouchPage(a, w, AccessOrder.Sequential);
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
        TouchPage(a, w, AccessOrder.Random);
        a.Label(ref skip);
        a.imul(r8, r8, (int)WorkloadArgs.LcgMultiplier); a.add(r8, r13); a.and(r8, r12);
        a.dec(r11); a.jne(loop);
        a.Label(ref done);
    }

    private static void HotsetLoop(Assembler a, Workload w)
    {
        var loop = a.CreateLabel(); var done = a.CreateLabel();
        a.test(r11, r11); a.je(done);
        a.Label(ref loop);
        HotsetStep(a);
        TouchPage(a, w, AccessOrder.Hotset);
        a.dec(r11); a.jne(loop);
        a.Label(ref done);
        a.nop();
    }

    /// <summary>
    /// One hotset access's page (host twin: <see cref="HotsetWalk.Next"/>): advances the xorshift64 state in R8, picks a
    /// page from the hot set at R12 or from the whole range (RBX pages), leaves its address in R10 (range start RDI),
    /// then counts R13 down and moves the hot set when it reaches zero. Uses RAX.
    /// </summary>
    private static void HotsetStep(Assembler a)
    {
        var cold = a.CreateLabel(); var sized = a.CreateLabel(); var picked = a.CreateLabel(); var wrap = a.CreateLabel(); var done = a.CreateLabel();
        a.mov(rax, r8); a.shl(rax, 13); a.xor(r8, rax);
        a.mov(rax, r8); a.shr(rax, 7); a.xor(r8, rax);
        a.mov(rax, r8); a.shl(rax, 17); a.xor(r8, rax);
        a.mov(rax, r8); a.shr(rax, 32); a.cmp(eax, unchecked((int)Hotset.HotThreshold)); a.jae(cold);
        a.mov(r10, rbx); a.shr(r10, Hotset.HotShift); a.jne(sized); a.mov(r10d, 1);
        a.Label(ref sized);
        a.mov(eax, r8d); a.imul(rax, r10); a.shr(rax, 32); a.add(rax, r12);
        a.cmp(rax, rbx); a.jb(picked); a.sub(rax, rbx); a.jmp(picked);
        a.Label(ref cold);
        a.mov(eax, r8d); a.imul(rax, rbx); a.shr(rax, 32);
        a.Label(ref picked);
        a.mov(r10, rax); a.shl(r10, 12); a.add(r10, rdi);
        a.dec(r13); a.jne(done);
        a.mov(r13d, Hotset.DriftEvery); a.add(r12, Hotset.DriftPages);
        a.Label(ref wrap);
        a.cmp(r12, rbx); a.jb(done); a.sub(r12, rbx); a.jmp(wrap);
        a.Label(ref done);
        a.nop(); // the caller's next label may follow: keep one label per instruction
    }

    /// <summary>Touches RCX qwords of the page at R10 (uses RAX, R14, R15; R9 is the result: pages written, sum read, mismatches).</summary>
    private static void TouchPage(Assembler a, Workload w, AccessOrder o)
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
                a.lea(rax, __qword_ptr[r15 + rdx]); a.cmp(__qword_ptr[r15], rax); a.je(ok);
                if (w == Workload.VerifyThenWrite && o == AccessOrder.Hotset)
                {
                    // a hotset pass revisits pages: one it already rewrote holds the second seed
                    a.lea(rax, __qword_ptr[r15 + rbp]); a.cmp(__qword_ptr[r15], rax); a.je(ok);
                }
                a.inc(r9);
                a.Label(ref ok);
                if (w == Workload.VerifyThenWrite) { a.lea(rax, __qword_ptr[r15 + rbp]); a.mov(__qword_ptr[r15], rax); }
                break;
            }
        }
        a.add(r15, 8); a.dec(r14); a.jne(q);
        if (w == Workload.Write) a.inc(r9); // pages written
    }

    /// <summary>
    /// The generation program for one order (register ABI in <see cref="GenerationProgram"/>): passes forever, a report
    /// at each pass end, then the next pass's seeds and order state.
    /// </summary>
    private static void GenerationLoop(Assembler a, AccessOrder o)
    {
        var passStart = a.CreateLabel(); var passEnd = a.CreateLabel(); var loop = a.CreateLabel();
        a.nop(); // one label per instruction: the entry's label is on this one
        a.Label(ref passStart);
        a.nop();
        switch (o)
        {
            case AccessOrder.Sequential:
                a.Label(ref loop);
                a.mov(r10, r8); a.shl(r10, 12); a.add(r10, rdi);
                GenerationPage(a, relaxed: false);
                a.inc(r8); a.cmp(r8, rbx); a.jb(loop);
                break;
            case AccessOrder.Random:
            {
                var skip = a.CreateLabel();
                a.Label(ref loop);
                a.cmp(r8, rbx); a.jae(skip);
                a.mov(r10, r8); a.shl(r10, 12); a.add(r10, rdi);
                GenerationPage(a, relaxed: false);
                a.Label(ref skip);
                a.imul(r8, r8, (int)WorkloadArgs.LcgMultiplier); a.add(r8, r13); a.and(r8, r12);
                a.dec(r11); a.jne(loop);
                break;
            }
            case AccessOrder.Hotset:
            {
                // pass 0 writes every page in a sequential sweep (page = RBX - R11); later passes walk the hot set
                var hot = a.CreateLabel();
                a.test(rbp, rbp); a.jne(hot);
                a.Label(ref loop);
                a.mov(r10, rbx); a.sub(r10, r11); a.shl(r10, 12); a.add(r10, rdi);
                GenerationPage(a, relaxed: false);
                a.dec(r11); a.jne(loop);
                a.jmp(passEnd);
                a.Label(ref hot);
                HotsetStep(a);
                GenerationPage(a, relaxed: true);
                a.dec(r11); a.jne(hot);
                break;
            }
        }
        a.Label(ref passEnd);
        // report(pass << 40 | min(mismatches, 2^40 - 1))
        a.mov(rax, r9); a.mov(r15, (long)GenerationReport.MismatchMask); a.cmp(rax, r15); a.cmova(rax, r15);
        a.mov(r15, rbp); a.shl(r15, GenerationReport.PassShift); a.or(rax, r15);
        Call(a, GuestOp.Report, rax);
        a.inc(rbp);
        a.mov(rsi, rdx);
        a.mov(rax, 1L << 32); a.add(rdx, rax);
        switch (o)
        {
            case AccessOrder.Sequential: a.xor(r8d, r8d); break;
            case AccessOrder.Random: a.lea(r11, __qword_ptr[r12 + 1]); break;   // R8 is back at its start: the LCG's full period
            case AccessOrder.Hotset: a.mov(r11, rbx); break;
        }
        a.jmp(passStart);
    }

    /// <summary>
    /// One page of a generation pass at R10: in pass 0 (RBP = 0) writes generation 0 (RDX); later, checks each qword
    /// (exact: holds a + RSI; relaxed: see <see cref="GenerationProgram"/>), counts mismatches in R9 and writes RDX's
    /// generation. Uses RAX, R14, R15 (and R10, relaxed: the first qword's value − address).
    /// </summary>
    private static void GenerationPage(Assembler a, bool relaxed)
    {
        var write = a.CreateLabel(); var verify = a.CreateLabel(); var ok = a.CreateLabel(); var done = a.CreateLabel();
        a.mov(r15, r10); a.mov(r14, rcx);
        a.test(rbp, rbp); a.jne(verify);
        a.Label(ref write);
        a.lea(rax, __qword_ptr[r15 + rdx]); a.mov(__qword_ptr[r15], rax);
        a.add(r15, 8); a.dec(r14); a.jne(write);
        a.jmp(done);
        a.Label(ref verify);
        a.nop();
        if (relaxed)
        {
            var valid = a.CreateLabel(); var bad = a.CreateLabel(); var q = a.CreateLabel();
            a.mov(r10, __qword_ptr[r15]); a.sub(r10, r15);
            a.mov(rax, r10); a.test(eax, eax); a.jne(bad);
            a.shr(rax, 32); a.sub(eax, (int)(GenerationProgram.Tag >> 32)); a.cmp(rax, rbp); a.jbe(valid);
            a.Label(ref bad);
            a.inc(r9);
            a.Label(ref valid);
            a.nop();
            a.Label(ref q);
            a.mov(rax, __qword_ptr[r15]); a.sub(rax, r15); a.cmp(rax, r10); a.je(ok); a.inc(r9);
            a.Label(ref ok);
            a.lea(rax, __qword_ptr[r15 + rdx]); a.mov(__qword_ptr[r15], rax);
            a.add(r15, 8); a.dec(r14); a.jne(q);
        }
        else
        {
            var q = a.CreateLabel();
            a.Label(ref q);
            a.lea(rax, __qword_ptr[r15 + rsi]); a.cmp(__qword_ptr[r15], rax); a.je(ok); a.inc(r9);
            a.Label(ref ok);
            a.lea(rax, __qword_ptr[r15 + rdx]); a.mov(__qword_ptr[r15], rax);
            a.add(r15, 8); a.dec(r14); a.jne(q);
        }
        a.Label(ref done);
        a.nop();
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
