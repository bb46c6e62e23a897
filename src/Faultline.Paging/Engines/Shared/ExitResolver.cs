using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.Paging.Decode;
using Faultline.Paging.Engines.Bitmap;

namespace Faultline.Paging.Engines.Shared;

/// <summary>
/// Turns a vCPU's exit into the guest pages it faulted on, and resolves them on the vCPU's own thread through the
/// <see cref="FaultPath"/>. Three forms of a missing page reach it (HOST.md): KVM_EXIT_MEMORY_FAULT with the GPA
/// (upstream), KVM_EXIT_MMIO inside a RAM slot (CPL0 here: the access is completed by hand once the page is in), and a
/// bare -EFAULT with no address (CPL3 here: the instruction at RIP is decoded with Iced and its memory operand walked
/// through the guest page tables; the access is simply retried). A fourth comes from a reader: a THREAD_ID userfaultfd
/// whose reader left the address in this vCPU's <see cref="ForwardMailbox"/> and kicked it out of KVM_RUN.
/// </summary>
internal sealed unsafe class ExitResolver
{
    private const ulong Page = GuestAddress.PageSize;
    private readonly GuestMachine _m;
    private readonly PageTracker _tracker;
    private readonly FaultPath _path;
    private readonly UserfaultBitmap? _bitmap;
    private readonly FaultAddressDecoder?[] _decoders;
    private readonly KvmSregs[] _sregs;
    private readonly bool[] _sregsValid;

    public ForwardMailbox? Mailbox { get; init; }
    /// <summary>When set, a fault on one missing page may be made async (the vCPU runs on; the page comes later).</summary>
    public AsyncPf.IAsyncPageFaults? Async { get; init; }

    public ExitResolver(GuestMachine m, PageTracker tracker, FaultPath path, UserfaultBitmap? bitmap)
    {
        _m = m; _tracker = tracker; _path = path; _bitmap = bitmap;
        var n = m.Config.Vcpus;
        _decoders = new FaultAddressDecoder?[n];
        _sregs = new KvmSregs[n];
        _sregsValid = new bool[n];
    }

    public void OnVcpuThreadStart(Vcpu vcpu)
    {
        Mailbox?.OnVcpuThreadStart(vcpu);
        _decoders[vcpu.Id] ??= new FaultAddressDecoder(new GuestMemoryView(_m, _tracker));
    }

    /// <summary>Resolves the exit's pages if it is a missing-page exit of guest RAM; false when the exit is not one.</summary>
    public bool TryHandle(Vcpu vcpu, in VcpuExit exit, FaultCounters c)
    {
        if (exit.Kind == VcpuExitKind.Interrupted)
        {
            if (Mailbox is null || !Mailbox.TryTake(vcpu.Id, out var gpa)) return false;
            c.ExitFaults++;
            Resolve(gpa, c);
            return true;
        }
        if (exit.Kind != VcpuExitKind.MemoryFault) return false;
        switch (exit.Form)
        {
            case MemoryFaultForm.MemoryFaultExit:
            case MemoryFaultForm.EmulatedMmio:
            {
                var first = exit.Address.Value & ~(Page - 1);
                var last = (exit.Address.Value + Math.Max(exit.Size, 1) - 1) & ~(Page - 1);
                if (!_tracker.Contains(new GuestAddress(first)) || !_tracker.Contains(new GuestAddress(last))) return false;
                c.ExitFaults++;
                // an access that is retried (not an emulated one, which must be completed now) on one page may go async
                if (exit.Form == MemoryFaultForm.MemoryFaultExit && first == last && TryAsync(vcpu, first, c)) return true;
                for (var p = first; p <= last; p += Page) Resolve(p, c);
                if (exit.Form == MemoryFaultForm.EmulatedMmio) CompleteEmulatedAccess(vcpu, exit);
                return true;
            }
            case MemoryFaultForm.BareEfault:
            {
                if (!vcpu.HasSyncedRegs) return false;
                // special registers are cached per vCPU (CR3 rarely changes); a decode that finds nothing refreshes them once
                var found = ResolveDecoded(vcpu, c, refresh: false, out var handled);
                if (!found && !handled) found = ResolveDecoded(vcpu, c, refresh: true, out handled);
                if (!found) _sregsValid[vcpu.Id] = false; // nothing was missing: if it faults again, decode with fresh CR3
                return handled;
            }
        }
        return false;
    }

    private bool ResolveDecoded(Vcpu vcpu, FaultCounters c, bool refresh, out bool handled)
    {
        ref var sregs = ref _sregs[vcpu.Id];
        if (refresh || !_sregsValid[vcpu.Id]) { sregs = vcpu.GetSregs(); _sregsValid[vcpu.Id] = true; }
        Span<ulong> gpas = stackalloc ulong[3];
        var n = _decoders[vcpu.Id]!.Candidates(in vcpu.SyncedRegs, in sregs, gpas);
        handled = false;
        var missing = 0;
        Span<ulong> pages = stackalloc ulong[3];
        for (var i = 0; i < n; i++)
        {
            var p = gpas[i] & ~(Page - 1);
            if (!_tracker.Contains(new GuestAddress(p))) continue;
            handled = true; // an access to guest RAM: if every candidate is present, another path installed it meanwhile; re-run
            var idx = _tracker.IndexOf(new GuestAddress(p));
            if (_tracker.IsPresent(idx) && (_bitmap is null || !_bitmap.IsMarked(idx))) continue;
            pages[missing++] = p;
        }
        if (missing == 0) return false;
        c.ExitFaults += missing;
        // one missing page: the guest may take it as an async page fault and run another task meanwhile
        if (missing == 1 && TryAsync(vcpu, pages[0], c)) return true;
        for (var i = 0; i < missing; i++) Resolve(pages[i], c);
        return true;
    }

    private bool TryAsync(Vcpu vcpu, ulong gpa, FaultCounters c)
    {
        if (Async is null) return false;
        var idx = _tracker.IndexOf(new GuestAddress(gpa));
        if (_tracker.IsPresent(idx)) return false;   // present but marked (native userfault): cleared on this thread at once
        if (!Async.TryAccept(vcpu, idx, out _)) return false;
        c.AsyncFaults++;
        return true;
    }

    private void Resolve(ulong gpa, FaultCounters c)
    {
        var idx = _tracker.IndexOf(new GuestAddress(gpa));
        if (_bitmap is not null && _bitmap.IsMarked(idx)) c.UserfaultExits++;
        if (!_path.Resolve(idx)) c.AlreadyPresent++;
        _bitmap?.Clear(idx); // a marked page that was present (native userfault): fixed now
    }

    /// <summary>CPL0 here: KVM's emulator turned the access into MMIO; the page is in now, so finish the access ourselves.</summary>
    private void CompleteEmulatedAccess(Vcpu vcpu, in VcpuExit exit)
    {
        var len = (int)Math.Min(exit.Size, 8u);
        var host = (byte*)_m.Ram.HostOf(exit.Address).Pointer;
        if (exit.IsWrite)
        {
            var data = exit.Data;
            Buffer.MemoryCopy(&data, host, len, len);
        }
        else vcpu.CompleteMmioRead(new ReadOnlySpan<byte>(host, len));
    }
}
