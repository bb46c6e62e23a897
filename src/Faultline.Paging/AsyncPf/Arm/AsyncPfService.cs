using Faultline.Kvm;
using Faultline.Kvm.Interop;
using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Paging.AsyncPf.Arm;

/// <summary>What the vendor-hypervisor async-PF service's sub-functions reach on one host (the engine's, or a source's that only keeps the registration).</summary>
internal interface IAsyncPfServiceHost
{
    int Slots { get; }
    uint EventOf(int vcpu);
    byte IrqOf(int vcpu);
    /// <summary>ENABLE with a word already checked for reserved bits.</summary>
    void Enable(int vcpu, ulong word);
    void IrqAck(int vcpu);
}

/// <summary>
/// Seed 003's SMCCC service (function 0x86000002, vendor hypervisor, fast, SMC32): x1 (RCX) = sub-function VERSION,
/// SLOTS, SDEI, IRQ, ENABLE (control block GPA | ENABLED | SEND_ALWAYS in x2 low / x3 high), IRQ_ACK; x0 (RAX) =
/// SMCCC status, x1 = the value asked for. The decoding, in one place for both hosts that answer it.
/// </summary>
internal static class AsyncPfService
{
    public static bool TryCall<T>(T host, Vcpu vcpu, uint function, ref KvmRegs r) where T : IAsyncPfServiceHost
    {
        if (function != AsyncPfFunctionId) return false;
        var id = vcpu.Id;
        var x0 = SmcccSuccess;
        switch (r.Rcx)
        {
            case FnVersion: r.Rcx = ArmPvAsyncPf.Version; break;
            case FnSlots: r.Rcx = (ulong)host.Slots; break;
            case FnSdei: r.Rcx = host.EventOf(id); break;
            case FnIrq: r.Rcx = host.IrqOf(id); break;
            case FnEnable:
            {
                var word = (r.Rdx & 0xFFFFFFFF) | (r.Rsi << 32);
                if ((word & ReservedBits) != 0) { x0 = SmcccInvalidParameter; break; }
                host.Enable(id, word);
                break;
            }
            case FnIrqAck: host.IrqAck(id); break;
            default: x0 = SmcccNotSupported; break;
        }
        r.Rax = unchecked((ulong)x0);
        return true;
    }
}
