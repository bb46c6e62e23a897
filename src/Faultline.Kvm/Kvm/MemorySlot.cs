using Faultline.Kvm.Memory;

namespace Faultline.Kvm;

/// <summary>A KVM memslot: a slot id and the guest RAM region it maps.</summary>
public sealed record MemorySlot(uint Id, GuestRegion Region, uint Flags)
{
    public GuestAddress Base => Region.Base;
    public ulong Size => Region.Size;
    public bool Contains(GuestAddress gpa) => Region.Contains(gpa);
}
