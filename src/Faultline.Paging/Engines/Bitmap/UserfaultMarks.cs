using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Engines.Shared;

namespace Faultline.Paging.Engines.Bitmap;

/// <summary>
/// KVM Userfault's mark and clear, native or emulated, for the bitmap engines. Native: set the bit and toggle
/// KVM_MEM_USERFAULT to zap the slot's mappings; KVM then exits on every marked page. Emulated (this kernel has no
/// KVM_MEM_USERFAULT): set the bit and take the host page away (shmem: drop the mapping, the page cache keeps the
/// bytes; anonymous: UFFDIO_MOVE it to a scratch area, moved back on install), so that its next access faults, the
/// contents are kept and a concurrent guest write is never lost.
/// </summary>
internal sealed class UserfaultMarks : IEvictionStore, IDisposable
{
    private readonly GuestMachine _m;
    private readonly UserfaultBitmap _bitmap;
    private readonly PageTracker _tracker;
    private readonly UffdSet _uffds;
    private readonly Lock _gate = new();
    private GuestRegion? _scratch;
    private byte[]? _inScratch;

    public bool Native { get; }

    public UserfaultMarks(GuestMachine m, UserfaultBitmap bitmap, PageTracker tracker, UffdSet uffds, bool native)
    {
        _m = m; _bitmap = bitmap; _tracker = tracker; _uffds = uffds; Native = native;
    }

    public long MemoryBytes => _inScratch?.Length ?? 0;

    /// <summary>Every page starts marked: the guest's first touch of each exits.</summary>
    public void MarkAll()
    {
        _bitmap.MarkAll();
        if (Native) _m.Vm.SetUserfault(_m.RamSlot, _bitmap.Address);
    }

    public void Mark(GuestAddress page)
    {
        var idx = _tracker.IndexOf(page);
        if (!_bitmap.Mark(idx)) return;
        if (Native)
        {
            lock (_gate)
            {
                _m.Vm.SetUserfault(_m.RamSlot, default);   // toggling the flag zaps the slot's mappings
                _m.Vm.SetUserfault(_m.RamSlot, _bitmap.Address);
            }
            return;
        }
        // take the page: Present → Installing (a lock against installers) → evicted → Missing
        if (!_tracker.TryClaimPresent(idx)) return; // missing already (or being installed): the marked bit makes its next access exit
        try
        {
            var host = _m.Ram.HostOf(page);
            if (_m.Ram.Backing == Backing.Shmem) _m.Ram.DropMapping(page, GuestAddress.PageSize);
            else
            {
                EnsureScratch();
                var o = _uffds.Of(idx).Move(_scratch!.HostOf(_scratch.Base + (idx << 12)), host, GuestAddress.PageSize);
                if (o != ResolveOutcome.Installed) throw new KvmException("UFFDIO_MOVE(evict)", Errno.EAGAIN);
                Volatile.Write(ref _inScratch![idx], 1);
            }
        }
        finally
        {
            _tracker.ReleaseToMissing(idx);
        }
    }

    /// <summary>
    /// Clears a page's bit. Natively that is the bit alone; the emulation also puts back a page that a mark took away
    /// (its kept contents, through <paramref name="path"/>), since here a missing host page is what makes the vCPU exit.
    /// </summary>
    public void Clear(GuestAddress page, FaultPath path)
    {
        var idx = _tracker.IndexOf(page);
        if (!_bitmap.IsMarked(idx)) return;
        if (!Native && _tracker.StateOf(idx) != PageTracker.Present) path.Resolve(idx);
        _bitmap.Clear(idx);
    }

    public bool IsMarked(GuestAddress page) => _bitmap.IsMarked(_tracker.IndexOf(page));

    public bool Holds(ulong index) => _inScratch is { } s && Volatile.Read(ref s[index]) != 0;

    public void MoveBack(ulong index, HostAddress host, bool wake)
    {
        var r = _uffds.Of(index).Move(host, _scratch!.HostOf(_scratch.Base + (index << 12)), GuestAddress.PageSize, dontWake: !wake);
        if (r != ResolveOutcome.Installed) throw new KvmException("UFFDIO_MOVE(back)", Errno.EEXIST);
        Volatile.Write(ref _inScratch![index], 0);
    }

    private void EnsureScratch()
    {
        if (_scratch is not null) return;
        lock (_gate)
        {
            if (_scratch is not null) return;
            var s = GuestRegion.Create(_m.Ram.Base, _m.Ram.Size, Backing.Anonymous, "faultline-evicted");
            _uffds.RegisterAlso(s, UffdRegisterMode.Missing);
            _inScratch = new byte[_tracker.Pages];
            _scratch = s;
        }
    }

    public void Dispose() => _scratch?.Dispose();
}
