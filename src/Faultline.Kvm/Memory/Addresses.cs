namespace Faultline.Kvm.Memory;

/// <summary>A guest physical address.</summary>
public readonly record struct GuestAddress(ulong Value)
{
    public const int PageShift = 12;
    public const ulong PageSize = 1UL << PageShift;
    public GuestAddress PageAligned => new(Value & ~(PageSize - 1));
    public GuestFrame Frame => new(Value >> PageShift);
    public GuestAddress Add(ulong offset) => new(Value + offset);
    public static GuestAddress operator +(GuestAddress a, ulong b) => new(a.Value + b);
    public override string ToString() => $"0x{Value:x}";
}

/// <summary>A guest page frame number (GPA >> 12).</summary>
public readonly record struct GuestFrame(ulong Value)
{
    public GuestAddress Address => new(Value << GuestAddress.PageShift);
    public override string ToString() => $"gfn 0x{Value:x}";
}

/// <summary>A host virtual address inside this process.</summary>
public readonly record struct HostAddress(ulong Value)
{
    public unsafe void* Pointer => (void*)Value;
    public HostAddress Add(ulong offset) => new(Value + offset);
    public override string ToString() => $"0x{Value:x}";
}
