using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Decode;

/// <summary>
/// Reads guest physical memory through the host mappings for the decoder: the system region always, guest RAM under
/// test only where the tracker says the page is present (touching a missing page of a SIGBUS userfaultfd range from a
/// host thread would raise a real SIGBUS).
/// </summary>
internal sealed unsafe class GuestMemoryView(GuestMachine machine, PageTracker tracker)
{
    private readonly GuestRegion _system = machine.System;
    private readonly GuestRegion _ram = machine.Ram;

    /// <summary>Host pointer to the byte at <paramref name="gpa"/>, or null if it can't be read safely.</summary>
    public byte* Pointer(ulong gpa)
    {
        if (gpa < _system.Size) return (byte*)_system.Host.Value + gpa;
        var ram = _ram.Base.Value;
        if (gpa >= ram && gpa - ram < _ram.Size)
        {
            var idx = (gpa - ram) >> 12;
            return tracker.IsPresent(idx) ? (byte*)_ram.Host.Value + (gpa - ram) : null;
        }
        return null;
    }

    public bool TryReadQword(ulong gpa, out ulong value)
    {
        var p = Pointer(gpa);
        if (p == null) { value = 0; return false; }
        value = *(ulong*)p;
        return true;
    }

    /// <summary>Translates a guest virtual address with a 4-level page walk from CR3 (4 KiB, 2 MiB and 1 GiB pages).</summary>
    public bool TryTranslate(ulong cr3, ulong gva, out ulong gpa)
    {
        gpa = 0;
        const ulong Present = 1, Huge = 0x80, AddrMask = 0x000F_FFFF_FFFF_F000UL;
        if (!TryReadQword((cr3 & AddrMask) + ((gva >> 39) & 511) * 8, out var e) || (e & Present) == 0) return false;
        if (!TryReadQword((e & AddrMask) + ((gva >> 30) & 511) * 8, out e) || (e & Present) == 0) return false;
        if ((e & Huge) != 0) { gpa = (e & AddrMask & ~((1UL << 30) - 1)) | (gva & ((1UL << 30) - 1)); return true; }
        if (!TryReadQword((e & AddrMask) + ((gva >> 21) & 511) * 8, out e) || (e & Present) == 0) return false;
        if ((e & Huge) != 0) { gpa = (e & AddrMask & ~((1UL << 21) - 1)) | (gva & ((1UL << 21) - 1)); return true; }
        if (!TryReadQword((e & AddrMask) + ((gva >> 12) & 511) * 8, out e) || (e & Present) == 0) return false;
        gpa = (e & AddrMask) | (gva & 0xFFF);
        return true;
    }
}
