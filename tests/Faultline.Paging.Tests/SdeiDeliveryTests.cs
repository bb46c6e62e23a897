using System.Buffers.Binary;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.Paging.AsyncPf.Arm;
using Faultline.TestKit;
using Iced.Intel;
using static Faultline.Kvm.ArmPvAsyncPf;
using static Iced.Intel.AssemblerRegisters;

namespace Faultline.Paging.Tests;

/// <summary>
/// SDEI delivered into a real vCPU: a CPL0 guest makes the calls through the SMCCC conduit, signals the software event
/// while masked (nothing arrives), unmasks (the handler runs at once, with event, argument, interrupted RIP and RFLAGS in
/// x0..x3, sees itself running and reads the interrupted R12 with EVENT_CONTEXT), COMPLETEs (the context comes back
/// whole), then signals again: that handler unregisters (PENDING), COMPLETE_AND_RESUMEs into code that gets an interrupt
/// frame of the interrupted context and <c>iretq</c>s into it, and the event is gone after the COMPLETE.
/// </summary>
public sealed class SdeiDeliveryTests
{
    private const ulong Results = 0x300000;   // system region, unused without the task kernel
    private const ulong Entries = 0x100, Mode = 0x108, Handler1 = 0x200, Handler2 = 0x240, ResumeRip = 0x2C0, Resumed = 0x2C8;

    [KvmFact]
    public void Events_are_delivered_masked_completed_and_resumed_on_a_real_vcpu()
    {
        var kernel = new GuestKernel();
        kernel.AddRoutine("sdei_test", Guest);
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * 4096) { Kernel = kernel });
        var sdei = new SdeiHost(m, [DefaultAsyncPfEvent]);
        var vcpu = m.Vcpus[0];
        vcpu.SetSregs(m.Image.SpecialRegisters(vcpu.GetSregs(), 0, PrivilegeLevel.Kernel));
        var entry = m.Image.RoutineOf("sdei_test");
        vcpu.SetRegs(new KvmRegs { Rip = entry, Rsp = GuestLayout.KernelStackTop(0), Rflags = 2 });
        var outcome = m.RunBooted(sdei, TimeSpan.FromSeconds(30));
        Assert.Null(outcome.Vcpus[0].Error);

        long Q(ulong off) => BinaryPrimitives.ReadInt64LittleEndian(m.System.Span(new GuestAddress(Results + off), 8));
        Assert.Equal(SdeiDenied, Q(0));              // COMPLETE with no handler running
        Assert.Equal(SdeiSuccess, Q(8));             // REGISTER
        Assert.Equal(SdeiDenied, Q(16));             // REGISTER again
        Assert.Equal(SdeiInvalidParameters, Q(24));  // ENABLE of an event this PE does not have
        Assert.Equal(SdeiSuccess, Q(32));            // ENABLE
        Assert.Equal(SdeiSuccess, Q(40));            // SIGNAL while masked
        Assert.Equal(0, Q(48));                      // ... and no handler ran
        Assert.Equal(SdeiSuccess, Q(56));            // UNMASK's own result, seen after the handler's COMPLETE
        Assert.Equal(0xBEEF, Q(64));                 // R12 survived the handler
        Assert.Equal(1, Q(72));                      // the pending event arrived on unmask, once
        // the first handler's registers: event, argument, interrupted RIP (inside the routine) and RFLAGS
        Assert.Equal(SoftwareSignaledEvent, (uint)Q(Handler1));
        Assert.Equal(0xA11CE, Q(Handler1 + 8));
        Assert.InRange((ulong)Q(Handler1 + 16), entry, entry + 0x400);
        Assert.Equal(2, Q(Handler1 + 24) & 0x202);
        Assert.Equal((long)(StatusRegistered | StatusEnabled | StatusRunning), Q(Handler1 + 32));
        Assert.Equal(0xBEEF, Q(Handler1 + 40));      // EVENT_CONTEXT(12)
        // the second: UNREGISTER while running is PENDING, COMPLETE_AND_RESUME's frame holds the interrupted RIP
        Assert.Equal(SdeiPending, Q(Handler2 + 48));
        Assert.Equal(1, Q(Resumed));
        Assert.Equal(Q(Handler2 + 16), Q(ResumeRip));
        Assert.Equal(SdeiSuccess, Q(80));            // SIGNAL's result, after the resume's iretq
        Assert.Equal(0xBEEF, Q(88));
        Assert.Equal(0, Q(96));                      // STATUS: unregistered at the COMPLETE
        Assert.Equal((2L, 1L, 1L), (sdei.CountsOf(0).Dispatched, sdei.CountsOf(0).Completed, sdei.CountsOf(0).Resumed));
    }

    private static void Store(Assembler a, ulong off) => a.mov(__qword_ptr[r15 + (int)off], rax);

    private static void Guest(Assembler a)
    {
        var handler = a.CreateLabel(); var second = a.CreateLabel(); var resume = a.CreateLabel();
        a.mov(r15, Results);
        a.mov(r12, 0xBEEF);
        a.xor(ecx, ecx);
        SmcccGuest.Call(a, SdeiEventComplete); Store(a, 0);
        for (var i = 0; i < 2; i++)
        {
            a.xor(ecx, ecx); a.lea(rdx, __[handler]); a.mov(rsi, 0xA11CE); a.xor(edi, edi);
            SmcccGuest.Call(a, SdeiEventRegister); Store(a, 8 + 8 * (ulong)i);
        }
        a.mov(ecx, 0x999); SmcccGuest.Call(a, SdeiEventEnable); Store(a, 24);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventEnable); Store(a, 32);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventSignal); Store(a, 40);
        a.mov(rax, __qword_ptr[r15 + (int)Entries]); Store(a, 48);
        SmcccGuest.Call(a, SdeiPeUnmask); Store(a, 56);
        a.mov(__qword_ptr[r15 + 64], r12);
        a.mov(rax, __qword_ptr[r15 + (int)Entries]); Store(a, 72);
        a.mov(__qword_ptr[r15 + (int)Mode], 1);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventSignal); Store(a, 80);
        a.mov(__qword_ptr[r15 + 88], r12);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventStatus); Store(a, 96);
        a.mov(rdi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Done);
        a.mov(__qword_ptr[rdi], 0);
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.jmp(hang);

        // the handler: x0..x3 = RAX, RCX, RDX, RSI; R15 is still the interrupted one (the results)
        a.Label(ref handler);
        a.inc(__qword_ptr[r15 + (int)Entries]);
        a.mov(rdi, Results + Handler1);
        a.cmp(__qword_ptr[r15 + (int)Mode], 0);
        var slot = a.CreateLabel();
        a.je(slot);
        a.mov(rdi, Results + Handler2);
        a.Label(ref slot);
        a.mov(__qword_ptr[rdi], rax); a.mov(__qword_ptr[rdi + 8], rcx); a.mov(__qword_ptr[rdi + 16], rdx); a.mov(__qword_ptr[rdi + 24], rsi);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventStatus); a.mov(__qword_ptr[rdi + 32], rax);
        a.mov(ecx, 12); SmcccGuest.Call(a, SdeiEventContext); a.mov(__qword_ptr[rdi + 40], rax);
        a.cmp(__qword_ptr[r15 + (int)Mode], 0);
        a.jne(second);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventComplete);
        a.Label(ref second);
        a.xor(ecx, ecx); SmcccGuest.Call(a, SdeiEventUnregister); a.mov(__qword_ptr[rdi + 48], rax);
        a.lea(rcx, __[resume]); SmcccGuest.Call(a, SdeiEventCompleteAndResume);

        // COMPLETE_AND_RESUME lands here as an interrupt from the interrupted context: frame at RSP, every GPR its own
        a.Label(ref resume);
        a.push(rax);
        a.mov(rax, __qword_ptr[rsp + 8]);
        a.mov(__qword_ptr[r15 + (int)ResumeRip], rax);
        a.mov(__qword_ptr[r15 + (int)Resumed], 1);
        a.pop(rax);
        a.iretq();
    }
}
