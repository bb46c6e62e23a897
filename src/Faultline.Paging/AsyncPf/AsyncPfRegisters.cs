using Faultline.Guest;
using Faultline.Kvm;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// x86's <see cref="IAsyncPfRegistration"/>: the guest's async-PF MSRs, intercepted with the same filter and checked as
/// <see cref="UserspaceAsyncPf"/> checks them (reserved bits: #GP).
/// </summary>
public sealed class AsyncPfRegisters : IAsyncPfRegistration
{
    private readonly ulong[] _enable, _interrupt;

    /// <summary>Installs the MSR filter on <paramref name="machine"/>'s VM (before its vCPUs run).</summary>
    public AsyncPfRegisters(GuestMachine machine)
    {
        _enable = new ulong[machine.Config.Vcpus];
        _interrupt = new ulong[machine.Config.Vcpus];
        UserspaceAsyncPf.InterceptMsrs(machine.Vm);
    }

    public AsyncPfProtocol Protocol => AsyncPfProtocol.X86;

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
    {
        var id = vcpu.Id;
        switch (exit.Kind)
        {
            case VcpuExitKind.MsrWrite when UserspaceAsyncPf.IsAsyncPfMsr(exit.Flags):
                var ok = UserspaceAsyncPf.IsValidWrite((uint)exit.Flags, exit.Data);
                if (ok && exit.Flags == KvmPvAsyncPf.MsrEnable) Volatile.Write(ref _enable[id], exit.Data);
                if (ok && exit.Flags == KvmPvAsyncPf.MsrInterrupt) Volatile.Write(ref _interrupt[id], exit.Data);
                vcpu.CompleteMsr(0, error: !ok);
                return true;
            case VcpuExitKind.MsrRead when UserspaceAsyncPf.IsAsyncPfMsr(exit.Flags):
                vcpu.CompleteMsr(exit.Flags switch { KvmPvAsyncPf.MsrEnable => _enable[id], KvmPvAsyncPf.MsrInterrupt => _interrupt[id], _ => 0 });
                return true;
        }
        return false;
    }

    /// <summary>vCPU <paramref name="vcpu"/>'s registration (no fault is ever outstanding here).</summary>
    public AsyncPfVcpuState Export(int vcpu) => new(Volatile.Read(ref _enable[vcpu]), Volatile.Read(ref _interrupt[vcpu]), 0, []);
}
