using System.Buffers.Binary;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Paging.AsyncPf.Arm;

/// <summary>A vendor SMCCC service behind the conduit (the async-PF service); <paramref name="regs"/> holds x0.. in and out.</summary>
internal interface ISmcccService
{
    /// <summary>On the vCPU's thread at a conduit exit: true if <paramref name="function"/> is this service's (results set in <paramref name="regs"/>).</summary>
    bool TryCall(Vcpu vcpu, uint function, ref KvmRegs regs);
}

/// <summary>Told when a handler completes (COMPLETE or COMPLETE_AND_RESUME), on the vCPU's thread.</summary>
internal interface ISdeiListener
{
    void OnCompleted(Vcpu vcpu, uint number);
}

/// <summary>
/// The guest's firmware on this x86 host: the SMCCC conduit (<see cref="ArmPvAsyncPf.Conduit"/>) and an SDEI dispatcher
/// over each vCPU's <see cref="SdeiEvents"/>. Delivery is what SDEI means, done on the vCPU's own thread before it
/// re-enters KVM_RUN, through kvm_run's synced registers (no ioctl): the interrupted context (every GPR, RIP, RFLAGS,
/// CS, SS) is saved and the vCPU enters the registered handler at the privilege level it registered from, with
/// x0 (RAX) = event number, x1 (RCX) = its argument, x2 (RDX) = the interrupted RIP, x3 (RSI) = the interrupted RFLAGS,
/// interrupts off, on the kernel stack (TSS.RSP0 when interrupted at CPL3, below the interrupted RSP at CPL0). Until
/// COMPLETE (the saved context comes back) or COMPLETE_AND_RESUME (it comes back as if an interrupt were taken from it
/// into the given address: an x86 interrupt frame of it on that stack) no other event reaches the vCPU.
/// </summary>
public sealed class SdeiHost : IExitHandler
{
    private readonly GuestMachine _m;
    private readonly Pe[] _pes;

    private sealed class Pe(ReadOnlySpan<uint> events)
    {
        public readonly SdeiEvents Events = new(events);
        public KvmRegs Saved;
        public KvmSegment SavedCs, SavedSs, HandlerCs, HandlerSs;
        public long Dispatched, Completed, Resumed, Calls;
    }

    public SdeiHost(GuestMachine machine, ReadOnlySpan<uint> events)
    {
        _m = machine;
        _pes = new Pe[machine.Config.Vcpus];
        for (var i = 0; i < _pes.Length; i++) _pes[i] = new Pe(events);
    }

    /// <summary>The vendor service the conduit also serves (the async-PF one), if any.</summary>
    internal ISmcccService? Vendor { get; set; }
    internal ISdeiListener? Listener { get; set; }

    public SdeiEvents EventsOf(int vcpu) => _pes[vcpu].Events;

    /// <summary>
    /// vCPU <paramref name="vcpu"/>'s events as a migration carries them (the vCPU stopped outside any handler): the
    /// number of the event in <paramref name="slot"/> (the async-PF one), every event's registration, and the code and
    /// stack segments its handlers run with (those of the context that registered: SDEI's client EL).
    /// </summary>
    public ArmSdeiRegistration Export(int vcpu, int slot)
    {
        var pe = _pes[vcpu];
        if (pe.Events.Running >= 0) throw new InvalidOperationException($"vCPU {vcpu} is inside an SDEI handler: stop it outside one to carry its state");
        return new(pe.Events.NumberOf(slot), pe.Events.Capture(), pe.HandlerCs, pe.HandlerSs);
    }

    /// <summary>Takes <see cref="Export"/>'s on a vCPU that has not run here: <paramref name="slot"/> renumbered to the carried event if needed.</summary>
    public void Import(int vcpu, int slot, ArmSdeiRegistration r)
    {
        var pe = _pes[vcpu];
        if (pe.Events.NumberOf(slot) != r.AsyncPfEvent) pe.Events.Renumber(slot, r.AsyncPfEvent);
        pe.Events.Restore(r.Events);
        pe.HandlerCs = r.HandlerCs;
        pe.HandlerSs = r.HandlerSs;
    }

    /// <summary>Handlers entered, COMPLETEs, COMPLETE_AND_RESUMEs and conduit calls on a vCPU (read after the run).</summary>
    public (long Dispatched, long Completed, long Resumed, long Calls) CountsOf(int vcpu)
    {
        var p = _pes[vcpu];
        return (p.Dispatched, p.Completed, p.Resumed, p.Calls);
    }

    public void OnVcpuThreadStart(Vcpu vcpu) => vcpu.SyncSpecialRegisters = true;   // CS/SS/TR at every exit, writable without an ioctl

    public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
    {
        if (exit.Kind != VcpuExitKind.Mmio || !exit.IsWrite || exit.Address.Value != Conduit) return false;
        var pe = _pes[vcpu.Id];
        pe.Calls++;
        var regs = vcpu.SyncedRegs;
        var sregs = vcpu.SyncedSregs;
        var fn = (uint)exit.Data;
        var sregsChanged = false;
        if (fn is >= SdeiFirst and <= SdeiLast) sregsChanged = Call(vcpu, pe, fn, ref regs, ref sregs);
        else if (Vendor is null || !Vendor.TryCall(vcpu, fn, ref regs)) regs.Rax = unchecked((ulong)SmcccNotSupported);
        // a call may have made an event dispatchable (unmask, enable, signal, complete): it interrupts the context just made
        sregsChanged |= Dispatch(pe, ref regs, ref sregs);
        vcpu.WriteSyncedRegs(regs);
        if (sregsChanged) WriteSregs(vcpu, ref sregs);
        return true;
    }

    /// <summary>
    /// Only CS and SS change, but KVM_SET_SREGS semantics come with the write: a vector in interrupt_bitmap is queued as
    /// an external interrupt again, and the synced copy shows one still being delivered at the exit (measured: the
    /// "page ready" ran two or three times per injection). Setting special registers never dequeues one, so an empty
    /// bitmap loses nothing.
    /// </summary>
    private static unsafe void WriteSregs(Vcpu vcpu, ref KvmSregs s)
    {
        for (var i = 0; i < 4; i++) s.InterruptBitmap[i] = 0;
        vcpu.WriteSyncedSregs(s);
    }

    /// <summary>
    /// Signals <paramref name="number"/> on <paramref name="vcpu"/> at an exit on its own thread (the async-PF "not
    /// present"): pending, and entered now if it can be. True if the vCPU now runs its handler.
    /// </summary>
    public bool SignalNow(Vcpu vcpu, uint number)
    {
        var pe = _pes[vcpu.Id];
        if (pe.Events.Signal(number) != SdeiSuccess) return false;
        var regs = vcpu.SyncedRegs;
        var sregs = vcpu.SyncedSregs;
        if (!Dispatch(pe, ref regs, ref sregs)) return false;
        vcpu.WriteSyncedRegs(regs);
        WriteSregs(vcpu, ref sregs);
        return true;
    }

    /// <summary>One SDEI call; x0.. from and into <paramref name="r"/>. True if the special registers changed (a context restored).</summary>
    private bool Call(Vcpu vcpu, Pe pe, uint fn, ref KvmRegs r, ref KvmSregs s)
    {
        var ev = pe.Events;
        long x0;
        switch (fn)
        {
            case SdeiVersion: x0 = (long)SdeiVersionValue; break;
            case SdeiEventRegister:
                x0 = ev.Register(r.Rcx, r.Rdx, r.Rsi, r.Rdi);
                if (x0 == SdeiSuccess) { pe.HandlerCs = s.Cs; pe.HandlerSs = s.Ss; }   // the handler runs where it registered from
                break;
            case SdeiEventEnable: x0 = ev.Enable(r.Rcx); break;
            case SdeiEventDisable: x0 = ev.Disable(r.Rcx); break;
            case SdeiEventContext: x0 = ev.Running < 0 ? SdeiDenied : ContextRegister(pe.Saved, r.Rcx); break;
            case SdeiEventComplete:
            case SdeiEventCompleteAndResume:
                var number = ev.Running >= 0 ? ev.NumberOf(ev.Running) : 0;
                x0 = ev.Complete(out _);
                if (x0 != SdeiSuccess) break;
                if (fn == SdeiEventComplete) { Restore(pe, ref r, ref s); pe.Completed++; }
                else { Resume(pe, r.Rcx, ref r, ref s); pe.Resumed++; }
                Listener?.OnCompleted(vcpu, number);
                return true;   // the caller's registers are gone: nothing to return into
            case SdeiEventUnregister: x0 = ev.Unregister(r.Rcx); break;
            case SdeiEventStatus: x0 = ev.Status(r.Rcx); break;
            case SdeiEventGetInfo: x0 = ev.GetInfo(r.Rcx, r.Rdx); break;
            case SdeiPeMask: x0 = ev.Mask(); break;
            case SdeiPeUnmask: x0 = ev.Unmask(); break;
            case SdeiPrivateReset: x0 = ev.PrivateReset(); break;
            case SdeiSharedReset: x0 = SdeiEvents.SharedReset(); break;
            case SdeiEventSignal: x0 = r.Rcx == SoftwareSignaledEvent ? ev.Signal(r.Rcx) : SdeiInvalidParameters; break;
            default: x0 = SdeiNotSupported; break;   // ROUTING_SET, INTERRUPT_BIND/RELEASE, FEATURES: no shared or bound events
        }
        r.Rax = unchecked((ulong)x0);
        return false;
    }

    /// <summary>EVENT_CONTEXT(n): x0..x4 are RAX, RCX, RDX, RSI, RDI (the calling convention), x5 RBX, x6 RBP, x7 RSP, x8..x15 R8..R15.</summary>
    private static long ContextRegister(in KvmRegs c, ulong n) => unchecked((long)(n switch
    {
        0 => c.Rax, 1 => c.Rcx, 2 => c.Rdx, 3 => c.Rsi, 4 => c.Rdi, 5 => c.Rbx, 6 => c.Rbp, 7 => c.Rsp,
        8 => c.R8, 9 => c.R9, 10 => c.R10, 11 => c.R11, 12 => c.R12, 13 => c.R13, 14 => c.R14, 15 => c.R15,
        _ => unchecked((ulong)SdeiInvalidParameters),
    }));

    /// <summary>Enters the handler of the next dispatchable event, if any, saving <paramref name="r"/>/<paramref name="s"/> as the interrupted context.</summary>
    private bool Dispatch(Pe pe, ref KvmRegs r, ref KvmSregs s)
    {
        var slot = pe.Events.TakeDispatchable();
        if (slot < 0) return false;
        pe.Saved = r; pe.SavedCs = s.Cs; pe.SavedSs = s.Ss;
        var stack = KernelStack(s, r.Rsp);
        r.Rax = pe.Events.NumberOf(slot);
        r.Rcx = pe.Events.ArgOf(slot);
        r.Rdx = pe.Saved.Rip;
        r.Rsi = pe.Saved.Rflags;
        r.Rip = pe.Events.EntryOf(slot);
        r.Rflags = 0x2;                       // interrupts off in the handler
        r.Rsp = stack;
        s.Cs = pe.HandlerCs; s.Ss = pe.HandlerSs;
        pe.Dispatched++;
        return true;
    }

    private void Restore(Pe pe, ref KvmRegs r, ref KvmSregs s)
    {
        r = pe.Saved;
        s.Cs = pe.SavedCs; s.Ss = pe.SavedSs;
    }

    /// <summary>COMPLETE_AND_RESUME: the saved GPRs, and an interrupt frame of the saved context (RIP, CS, RFLAGS, RSP, SS) for the code at <paramref name="at"/>.</summary>
    private void Resume(Pe pe, ulong at, ref KvmRegs r, ref KvmSregs s)
    {
        var c = pe.Saved;
        var top = KernelStack(new KvmSregs { Cs = pe.SavedCs, Tr = s.Tr }, c.Rsp) & ~15UL;
        var frame = top - 40;
        var span = GuestSpan(frame, 40);
        BinaryPrimitives.WriteUInt64LittleEndian(span, c.Rip);
        BinaryPrimitives.WriteUInt64LittleEndian(span[8..], pe.SavedCs.Selector);
        BinaryPrimitives.WriteUInt64LittleEndian(span[16..], c.Rflags);
        BinaryPrimitives.WriteUInt64LittleEndian(span[24..], c.Rsp);
        BinaryPrimitives.WriteUInt64LittleEndian(span[32..], pe.SavedSs.Selector);
        r = c;
        r.Rip = at;
        r.Rsp = frame;
        r.Rflags = c.Rflags & ~0x4300UL;     // as an interrupt gate: IF, TF and NT clear
        s.Cs = pe.HandlerCs; s.Ss = pe.HandlerSs;
    }

    /// <summary>The stack a handler gets: TSS.RSP0 when interrupted at CPL3 (as the CPU's own stack switch), else below the red zone.</summary>
    private ulong KernelStack(in KvmSregs s, ulong rsp) =>
        (s.Cs.Selector & 3) == 3 ? BinaryPrimitives.ReadUInt64LittleEndian(GuestSpan(s.Tr.Base + 4, 8)) : (rsp - 128) & ~15UL;

    private Span<byte> GuestSpan(ulong gpa, int length)
    {
        var region = gpa < _m.System.Size ? _m.System : _m.Ram;
        return region.Span(new GuestAddress(gpa), length);
    }
}
