using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;

namespace Faultline.Kvm;

/// <summary>A KVM virtual machine: memslots and vCPUs. Disposing it stops nothing: stop vCPU threads first.</summary>
public sealed unsafe class Vm : IDisposable
{
    private readonly VmFd _fd;
    private readonly List<Vcpu> _vcpus = [];
    private readonly List<MemorySlot> _slots = [];
    private readonly List<GuestRegion> _owned = [];
    private MemorySlot[] _slotSnapshot = [];
    private int _disposed;

    public KvmSystem Kvm { get; }
    public IReadOnlyList<Vcpu> Vcpus => _vcpus;
    public IReadOnlyList<MemorySlot> Slots => _slots;

    internal Vm(KvmSystem kvm, VmFd fd) { Kvm = kvm; _fd = fd; }

    /// <summary>KVM_CHECK_EXTENSION on the VM fd.</summary>
    public int CheckExtension(KvmCap cap)
    {
        var r = Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_CHECK_EXTENSION, (uint)cap);
        return r < 0 ? 0 : r;
    }

    /// <summary>KVM_ENABLE_CAP on the VM fd.</summary>
    public void EnableCap(KvmCap cap, ulong arg0 = 0)
    {
        var c = new KvmEnableCap { Cap = (uint)cap };
        c.Args[0] = arg0;
        if (Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_ENABLE_CAP, &c) != 0) throw new KvmException($"KVM_ENABLE_CAP({cap})", Marshal.GetLastPInvokeError());
    }

    /// <summary>Whether <see cref="EnableExceptionPayload"/> has run: exceptions may then be queued pending, with a payload.</summary>
    public bool ExceptionPayloadEnabled => _exceptionPayload;
    private volatile bool _exceptionPayload;

    /// <summary>
    /// KVM_ENABLE_CAP(KVM_CAP_EXCEPTION_PAYLOAD, 1): an exception set with KVM_SET_VCPU_EVENTS may be pending with its
    /// payload (a #PF's CR2), which KVM applies only when it delivers it (HOST.md, "Exception injection"). VM-wide, and
    /// it changes what KVM_GET_VCPU_EVENTS reports (pending and payload apart, KVM_VCPUEVENT_VALID_PAYLOAD set). Idempotent.
    /// </summary>
    public void EnableExceptionPayload()
    {
        if (_exceptionPayload) return;
        if (CheckExtension(KvmCap.ExceptionPayload) <= 0)
            throw new HostSupportException("KVM_CAP_EXCEPTION_PAYLOAD is not supported by this host: an injected #PF cannot carry its CR2");
        EnableCap(KvmCap.ExceptionPayload, 1);
        _exceptionPayload = true;
    }

    /// <summary>
    /// Sends guest RDMSR/WRMSR of the MSRs [<paramref name="first"/>, first + <paramref name="count"/>) whose bit is set in
    /// <paramref name="exitMask"/> (bit i = MSR first + i) to userspace: KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR,
    /// FILTER) and KVM_X86_SET_MSR_FILTER with one range, every other MSR left to KVM (default allow). Such an access
    /// exits <see cref="VcpuExitKind.MsrRead"/>/<see cref="VcpuExitKind.MsrWrite"/>; <see cref="Vcpu.CompleteMsr"/> finishes it.
    /// </summary>
    public void InterceptMsrs(uint first, int count, ulong exitMask)
    {
        if (count is < 1 or > 64) throw new ArgumentOutOfRangeException(nameof(count), count, "1..64 MSRs");
        if (CheckExtension(KvmCap.X86UserSpaceMsr) <= 0 || CheckExtension(KvmCap.X86MsrFilter) <= 0)
            throw new HostSupportException("this host's KVM cannot exit to userspace on MSR accesses (KVM_CAP_X86_USER_SPACE_MSR, KVM_CAP_X86_MSR_FILTER)");
        const ulong ExitReasonFilter = 1 << 2;
        EnableCap(KvmCap.X86UserSpaceMsr, ExitReasonFilter);
        var allow = ~exitMask;   // the bitmap allows with 1 and exits with 0
        var f = new KvmMsrFilter { Flags = KvmMsrFilter.DefaultAllow };
        var range = (KvmMsrFilterRange*)f.Ranges;
        range->Flags = KvmMsrFilter.RangeRead | KvmMsrFilter.RangeWrite;
        range->Nmsrs = (uint)count;
        range->Base = first;
        range->Bitmap = (ulong)&allow;
        if (Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_X86_SET_MSR_FILTER, &f) != 0)
            throw new KvmException("KVM_X86_SET_MSR_FILTER", Marshal.GetLastPInvokeError());
    }

    /// <summary>Maps a region as a memslot (KVM_SET_USER_MEMORY_REGION). With <paramref name="owned"/> the VM unmaps it on Dispose.</summary>
    public MemorySlot AddMemory(GuestRegion region, uint flags = 0, bool owned = true)
    {
        var id = (uint)_slots.Count;
        var r = new KvmUserspaceMemoryRegion
        {
            Slot = id, Flags = flags, GuestPhysAddr = region.Base.Value, MemorySize = region.Size, UserspaceAddr = region.Host.Value,
        };
        if (Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_SET_USER_MEMORY_REGION, &r) != 0)
        {
            var e = Marshal.GetLastPInvokeError();
            if (owned) region.Dispose();
            throw new KvmException("KVM_SET_USER_MEMORY_REGION", e);
        }
        var slot = new MemorySlot(id, region, flags);
        _slots.Add(slot);
        if (owned) _owned.Add(region);
        _slotSnapshot = [.. _slots];
        return slot;
    }

    /// <summary>Changes a slot's flags, and the userfault bitmap pointer, with KVM_SET_USER_MEMORY_REGION2.</summary>
    private void SetSlotFlags2(MemorySlot slot, uint flags, HostAddress userfaultBitmap)
    {
        var r = new KvmUserspaceMemoryRegion2
        {
            Slot = slot.Id, Flags = flags, GuestPhysAddr = slot.Base.Value, MemorySize = slot.Size,
            UserspaceAddr = slot.Region.Host.Value, UserfaultBitmap = userfaultBitmap.Value,
        };
        if (Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_SET_USER_MEMORY_REGION2, &r) != 0)
            throw new KvmException("KVM_SET_USER_MEMORY_REGION2", Marshal.GetLastPInvokeError());
        var i = _slots.FindIndex(x => x.Id == slot.Id);
        _slots[i] = slot with { Flags = flags };
        _slotSnapshot = [.. _slots];
    }

    /// <summary>Turns KVM_MEM_USERFAULT on with <paramref name="bitmap"/> (one bit per page), or off when it is zero. Toggling on zaps the slot's mappings.</summary>
    public void SetUserfault(MemorySlot slot, HostAddress bitmap)
    {
        var flags = bitmap.Value == 0 ? slot.Flags & ~KvmConst.KVM_MEM_USERFAULT : slot.Flags | KvmConst.KVM_MEM_USERFAULT;
        SetSlotFlags2(_slots.First(s => s.Id == slot.Id), flags, bitmap);
    }

    /// <summary>
    /// Whether this kernel implements native KVM Userfault: KVM_MEM_USERFAULT with a bitmap is accepted on a scratch slot.
    /// A kernel without the series rejects the unknown flag (EINVAL), so the probe is exact whatever the cap number.
    /// </summary>
    public static bool ProbeNativeUserfault(KvmSystem kvm)
    {
        using var vm = kvm.CreateVm();
        using var region = GuestRegion.Create(new GuestAddress(0x100000), GuestAddress.PageSize, Backing.Anonymous, "faultline-probe");
        var bitmap = stackalloc ulong[1];
        var r = new KvmUserspaceMemoryRegion2
        {
            Slot = 0, Flags = KvmConst.KVM_MEM_USERFAULT, GuestPhysAddr = region.Base.Value, MemorySize = region.Size,
            UserspaceAddr = region.Host.Value, UserfaultBitmap = (ulong)bitmap,
        };
        var ok = Libc.Ioctl(vm._fd.Fd, KvmIoctls.KVM_SET_USER_MEMORY_REGION2, &r) == 0;
        if (ok)
        {
            r.MemorySize = 0; r.Flags = 0; r.UserfaultBitmap = 0;
            Libc.Ioctl(vm._fd.Fd, KvmIoctls.KVM_SET_USER_MEMORY_REGION2, &r);
        }
        return ok;
    }

    /// <summary>The slot holding a guest address, or null (an address outside every slot is MMIO).</summary>
    public MemorySlot? SlotOf(GuestAddress gpa)
    {
        var slots = _slotSnapshot;
        for (var i = 0; i < slots.Length; i++) if (slots[i].Contains(gpa)) return slots[i];
        return null;
    }

    /// <summary>KVM_CREATE_VCPU, its kvm_run mapping, and sync-regs set up. The fd is owned before anything else can fail.</summary>
    public Vcpu CreateVcpu(int id)
    {
        var fd = new VcpuFd(Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_CREATE_VCPU, (nuint)id));
        if (fd.IsInvalid) throw new KvmException($"KVM_CREATE_VCPU({id})", Marshal.GetLastPInvokeError());
        var size = Kvm.VcpuMmapSize;
        var run = Libc.Mmap(null, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd.Fd, 0);
        if (run == Libc.MAP_FAILED)
        {
            var e = Marshal.GetLastPInvokeError();
            fd.Dispose();
            throw new KvmException("mmap(kvm_run)", e);
        }
        var syncRegs = (ulong)Kvm.CheckExtension(KvmCap.SyncRegs);
        var vcpu = new Vcpu(this, id, fd, (KvmRun*)run, size, syncRegs);
        _vcpus.Add(vcpu);
        return vcpu;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var v in _vcpus) v.Dispose();   // munmap kvm_run, close the vCPU fds
        _fd.Dispose();                           // memslots go with the VM fd
        foreach (var r in _owned) r.Dispose();   // guest RAM last: nothing can touch it now
    }
}
