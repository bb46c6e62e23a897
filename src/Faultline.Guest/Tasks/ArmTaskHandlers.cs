using Faultline.Kvm;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using static Faultline.Guest.Tasks.TaskLayout;
using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Guest.Tasks;

/// <summary>The async-PF guest ABI a <see cref="TaskKernel"/> speaks.</summary>
public enum TaskProtocol
{
    /// <summary>x86's PV async PF: MSRs, #PF with CR2 = token, the "page ready" vector, the ACK MSR.</summary>
    X86,
    /// <summary>arm64's (seed 003): SMCCC calls, the SDEI event for "not present", the PPI for "page ready", IRQ_ACK.</summary>
    Arm,
}

/// <summary>
/// The task kernel's arm64 async-PF handlers (<see cref="TaskProtocol.Arm"/>, <see cref="ArmPvAsyncPf"/>), beside its
/// x86 ones and sharing its scheduler and task switch:
/// <list type="bullet">
/// <item>boot (<see cref="BootRoutine"/>): asks the async-PF service for its VERSION, SDEI event and IRQ (which must
/// be the kernel's ready vector), registers the SDEI handler with the vCPU block as its argument, enables the event,
/// unmasks the PE and ENABLEs the service with the control block | ENABLED; then enters the first task.</item>
/// <item>the SDEI handler ("not present"; x1 = RCX = the vCPU block): reads reason and token from the control block and
/// clears it, keeps the token, and COMPLETE_AND_RESUMEs into the resume routine, which the host enters as an interrupt
/// from the faulting task (its frame on the task's kernel stack): it parks the task on the token and schedules, as the
/// x86 #PF handler does. Any other reason just COMPLETEs.</item>
/// <item>the PPI ("page ready"): the token from the control block, the block cleared, IRQ_ACK; then the x86 handler's
/// wake-up and switch.</item>
/// </list>
/// Nine instructions for the SDEI handler, four more than x86's for the PPI; each SMCCC call is two plus an exit.
/// </summary>
public static class ArmTaskHandlers
{
    /// <summary>The boot routine; the SDEI handler and its resume routine follow it in the same code.</summary>
    public const string BootRoutine = "tasks_boot_arm";
    /// <summary>vCPU block: the token the SDEI handler took from the control block; the SDEI event number.</summary>
    public const int VbArmToken = 0x1F0, VbArmEvent = 0x1F8;

    internal static void Install(TaskKernel kernel) => kernel.Kernel.AddRoutine(BootRoutine, a =>
    {
        var shared = kernel.SharedLabels(a);
        var handler = a.CreateLabel("sdei_handler"); var resume = a.CreateLabel("sdei_resume");
        Boot(a, shared.EnterFirst, handler);
        a.Label(ref handler);
        SdeiHandler(a, resume);
        a.Label(ref resume);
        Resume(a, shared.ParkOnToken);
    });

    /// <summary>CPL0, RBP = vCPU block, VbEnable = the control word: the calls of seed 003's guest, then the first task.</summary>
    private static void Boot(Assembler a, Label enterFirst, Label handler)
    {
        var fail = a.CreateLabel();
        a.mov(rax, __qword_ptr[rbp + VbEnable]);
        a.test(rax, rax);
        a.jz(enterFirst);
        a.mov(ecx, (uint)FnVersion);
        SmcccGuest.Call(a, AsyncPfFunctionId);
        a.shr(rcx, 16);
        a.cmp(rcx, 1);                                    // major version 1
        a.jne(fail);
        a.mov(ecx, (uint)FnIrq);
        SmcccGuest.Call(a, AsyncPfFunctionId);
        a.cmp(rcx, __qword_ptr[rbp + VbVector]);          // the PPI the VMM set must be the vector with our handler
        a.jne(fail);
        a.mov(ecx, (uint)FnSdei);
        SmcccGuest.Call(a, AsyncPfFunctionId);
        a.mov(__qword_ptr[rbp + VbArmEvent], rcx);
        a.lea(rdx, __[handler]);
        a.mov(rsi, rbp);                                  // its argument: the vCPU block
        a.xor(edi, edi);                                  // RM_ANY
        SmcccGuest.Call(a, SdeiEventRegister);
        a.test(rax, rax);
        a.jnz(fail);
        a.mov(rcx, __qword_ptr[rbp + VbArmEvent]);
        SmcccGuest.Call(a, SdeiEventEnable);
        a.test(rax, rax);
        a.jnz(fail);
        SmcccGuest.Call(a, SdeiPeUnmask);
        a.mov(ecx, (uint)FnEnable);
        a.mov(rsi, __qword_ptr[rbp + VbEnable]);
        a.mov(edx, esi);                                  // x2 = bits 31:0
        a.shr(rsi, 32);                                   // x3 = bits 63:32
        SmcccGuest.Call(a, AsyncPfFunctionId);
        a.test(rax, rax);
        a.jz(enterFirst);
        a.Label(ref fail);
        a.mov(rdi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Fail);
        a.mov(__qword_ptr[rdi], rax);
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.jmp(hang);
    }

    /// <summary>Entered by the host: RAX = event, RCX = the vCPU block, RDX = interrupted RIP, RSI = its RFLAGS; interrupts off.</summary>
    private static void SdeiHandler(Assembler a, Label resume)
    {
        var complete = a.CreateLabel();
        a.mov(eax, __dword_ptr[rcx + VbApf + ReasonOffset]);
        a.mov(edx, __dword_ptr[rcx + VbApf + TokenOffset]);
        a.mov(__qword_ptr[rcx + VbApf], 0);              // reason and token read: the block is the host's again at COMPLETE
        a.mov(__qword_ptr[rcx + VbArmToken], rdx);
        a.cmp(eax, (int)ReasonPageNotPresent);
        a.jne(complete);
        a.lea(rcx, __[resume]);
        SmcccGuest.Call(a, SdeiEventCompleteAndResume);
        a.Label(ref complete);
        SmcccGuest.Call(a, SdeiEventComplete);
    }

    /// <summary>An interrupt from the faulting task (the host built its frame): park it on the kept token, schedule.</summary>
    private static void Resume(Assembler a, Label parkOnToken)
    {
        TaskKernel.SaveRegisters(a);
        TaskKernel.FindCurrent(a);
        a.mov(rcx, __qword_ptr[rbp + VbArmToken]);
        a.jmp(parkOnToken);
    }

    /// <summary>In the PPI handler (RBP = vCPU block): EDI = the token, the control block cleared, IRQ_ACK.</summary>
    internal static void TakeReady(Assembler a)
    {
        a.mov(edi, __dword_ptr[rbp + VbApf + TokenOffset]);
        a.mov(__qword_ptr[rbp + VbApf], 0);
        a.mov(ecx, (uint)FnIrqAck);
        SmcccGuest.Call(a, AsyncPfFunctionId);
    }
}
