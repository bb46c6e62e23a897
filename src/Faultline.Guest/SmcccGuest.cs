using Faultline.Kvm;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Faultline.Guest;

/// <summary>
/// The guest's side of the SMCCC calling convention on this host (<see cref="ArmPvAsyncPf"/>): the function ID in RAX,
/// x1..x4 in RCX, RDX, RSI, RDI set by the caller, and the trap, one store of RAX to the conduit (an MMIO write exit).
/// Results come back in RAX, RCX, RDX, RSI. Two instructions at CPL0, where every instruction is emulated.
/// </summary>
public static class SmcccGuest
{
    /// <summary><c>mov eax, function; mov [Conduit], rax</c> (a moffs64 store: no address register).</summary>
    public static void Call(Assembler a, uint function)
    {
        a.mov(eax, function);
        Trap(a);
    }

    /// <summary>The trap alone (RAX already holds the function ID).</summary>
    public static void Trap(Assembler a) => a.AddInstruction(Instruction.Create(Code.Mov_moffs64_RAX, new MemoryOperand(ArmPvAsyncPf.Conduit, 8), Register.RAX));
}
