using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Paging.Engines;
using Faultline.Paging.Engines.Shared;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// Async page faults for a kernel without them, x86's guest ABI: what KVM's in-kernel async PF and the RFC's "async PF
/// user" do, built from MSR exits, KVM_SET_VCPU_EVENTS and KVM_INTERRUPT, with the guest ABI a Linux guest speaks
/// (kvm_para.h) over the shared machinery of <see cref="AsyncPfHost"/>:
/// <list type="bullet">
/// <item>The guest enables it with MSR_KVM_ASYNC_PF_INT (the "page ready" vector) and MSR_KVM_ASYNC_PF_EN (its 64-byte
/// area, ENABLED | DELIVERY_AS_INT): both are intercepted with an MSR filter and kept here per vCPU.</item>
/// <item>"Not present (T)": the area's flags word is set to 1 and a #PF with CR2 = T is queued into the vCPU's loop.</item>
/// <item>"Page ready (T)": T is written into the area's token word and the vector posted into the loop, which kicks the
/// vCPU out of KVM_RUN if needed and injects it when the guest has interrupts on. The next one goes only after the
/// guest's MSR_KVM_ASYNC_PF_ACK (one "page ready" at a time, as KVM).</item>
/// </list>
/// </summary>
public sealed class UserspaceAsyncPf : AsyncPfHost
{
    private const uint MsrEn = KvmPvAsyncPf.MsrEnable, MsrInt = KvmPvAsyncPf.MsrInterrupt, MsrAck = KvmPvAsyncPf.MsrAck;

    internal UserspaceAsyncPf(GuestMachine machine, PageTracker tracker, FaultPath path, AsyncPfOptions options, int historyPerVcpu = 1 << 14)
        : base(machine, tracker, path, options, historyPerVcpu) { }

    public override AsyncPfProtocol Protocol => AsyncPfProtocol.X86;

    private protected override void PrepareVm()
    {
        Machine.Vm.EnableExceptionPayload();
        InterceptMsrs(Machine.Vm);
    }

    /// <summary>The MSR filter: the range starts at MSR_KVM_ASYNC_PF_EN; exits on EN (bit 0), INT (bit 4) and ACK (bit 5), KVM keeps the rest.</summary>
    internal static void InterceptMsrs(Vm vm) => vm.InterceptMsrs(MsrEn, 6, 1UL << 0 | 1UL << 4 | 1UL << 5);

    internal static bool IsAsyncPfMsr(ulong msr) => msr is MsrEn or MsrInt or MsrAck;

    /// <summary>KVM's checks: reserved bits of INT (above the vector) or EN give #GP.</summary>
    internal static bool IsValidWrite(uint msr, ulong value) => msr switch
    {
        MsrInt => (value & ~0xFFUL) == 0,
        MsrEn => (value & KvmPvAsyncPf.ReservedBits) == 0,
        _ => true,
    };

    /// <summary>ENABLED and DELIVERY_AS_INT: current KVM delivers nothing without both.</summary>
    private protected override bool Enabled(AsyncPfVcpu s) => (s.EnableMsr & KvmPvAsyncPf.EnabledWithInterrupt) == KvmPvAsyncPf.EnabledWithInterrupt;
    private protected override bool SendAlways(AsyncPfVcpu s) => (s.EnableMsr & KvmPvAsyncPf.SendAlways) != 0;
    private protected override bool InUserMode(Vcpu vcpu) => vcpu.GetSregs().Cs.Dpl == 3;

    private protected override void NotifyNotPresent(Vcpu vcpu, AsyncPfVcpu s, uint token)
    {
        WriteGuest(s.AreaGpa + KvmPvAsyncPf.FlagsOffset, KvmPvAsyncPf.ReasonPageNotPresent);
        s.Loop!.TryPost(VcpuEvent.PageFault(0, token));   // on its own thread: injected before the re-entry, no kick
    }

    private protected override void NotifyReady(AsyncPfVcpu s, uint token)
    {
        WriteGuest(s.AreaGpa + KvmPvAsyncPf.TokenOffset, token);
        s.Loop!.TryPost(VcpuEvent.Interrupt((byte)s.IntMsr));   // kicks the vCPU when posted from another thread
    }

    /// <summary>The guest's MSR accesses; false for any other exit.</summary>
    private protected override bool TryHandleProtocolExit(Vcpu vcpu, in VcpuExit exit)
    {
        switch (exit.Kind)
        {
            case VcpuExitKind.MsrWrite when IsAsyncPfMsr(exit.Flags):
                OnWrmsr(vcpu, (uint)exit.Flags, exit.Data);
                return true;
            case VcpuExitKind.MsrRead when IsAsyncPfMsr(exit.Flags):
            {
                var s = Vcpus[vcpu.Id];
                vcpu.CompleteMsr(exit.Flags switch { MsrEn => s.EnableMsr, MsrInt => s.IntMsr, _ => 0 });
                return true;
            }
        }
        return false;
    }

    private void OnWrmsr(Vcpu vcpu, uint msr, ulong value)
    {
        var s = Vcpus[vcpu.Id];
        if (!IsValidWrite(msr, value)) { vcpu.CompleteMsr(0, error: true); return; }   // reserved bits: #GP, as KVM
        switch (msr)
        {
            case MsrInt:
                lock (s.Lock) s.IntMsr = value;
                break;
            case MsrEn:
                SetEnableWord(s, value);
                break;
            case MsrAck:
                if ((value & 1) != 0) OnAck(s);
                break;
        }
        vcpu.CompleteMsr(0);
    }

    private protected override void CheckRegistration(int vcpu, AsyncPfVcpuState state)
    {
        if (!IsValidWrite(MsrEn, state.EnableMsr) || !IsValidWrite(MsrInt, state.InterruptMsr))
            throw new UsageException($"vCPU {vcpu}: the async-PF registration has reserved bits set (EN 0x{state.EnableMsr:x}, INT 0x{state.InterruptMsr:x})");
    }
}
