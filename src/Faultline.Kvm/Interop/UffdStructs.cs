using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

// Layouts from include/uapi/linux/userfaultfd.h (KERNEL-FACTS.md §5).

[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct UffdioApi { [FieldOffset(0)] public ulong Api; [FieldOffset(8)] public ulong Features; [FieldOffset(16)] public ulong Ioctls; }

[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct UffdioRange { [FieldOffset(0)] public ulong Start; [FieldOffset(8)] public ulong Len; }

[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct UffdioRegister { [FieldOffset(0)] public UffdioRange Range; [FieldOffset(16)] public ulong Mode; [FieldOffset(24)] public ulong Ioctls; }

[StructLayout(LayoutKind.Explicit, Size = 40)]
internal struct UffdioCopy
{
    [FieldOffset(0)] public ulong Dst; [FieldOffset(8)] public ulong Src; [FieldOffset(16)] public ulong Len;
    [FieldOffset(24)] public ulong Mode; [FieldOffset(32)] public long Copy;
}

[StructLayout(LayoutKind.Explicit, Size = 40)]
internal struct UffdioMove
{
    [FieldOffset(0)] public ulong Dst; [FieldOffset(8)] public ulong Src; [FieldOffset(16)] public ulong Len;
    [FieldOffset(24)] public ulong Mode; [FieldOffset(32)] public long Move;
}

[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct UffdioZeropage { [FieldOffset(0)] public UffdioRange Range; [FieldOffset(16)] public ulong Mode; [FieldOffset(24)] public long Zeropage; }

[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct UffdioContinue { [FieldOffset(0)] public UffdioRange Range; [FieldOffset(16)] public ulong Mode; [FieldOffset(24)] public long Mapped; }

[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct UffdioWriteprotect { [FieldOffset(0)] public UffdioRange Range; [FieldOffset(16)] public ulong Mode; }

/// <summary>struct uffd_msg (32 bytes, packed); the pagefault and remove arms of the union are read.</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct UffdMsg
{
    [FieldOffset(0)] public byte Event;
    [FieldOffset(8)] public ulong PagefaultFlags;
    [FieldOffset(16)] public ulong PagefaultAddress;
    [FieldOffset(24)] public uint PagefaultPtid;
    [FieldOffset(8)] public ulong RemoveStart;   // the remove arm (UFFD_EVENT_REMOVE)
    [FieldOffset(16)] public ulong RemoveEnd;
}

internal static class UffdConst
{
    public const ulong UFFD_API = 0xAA;
    public const byte UFFD_EVENT_PAGEFAULT = 0x12;
    public const byte UFFD_EVENT_REMOVE = 0x15;
    public const ulong UFFD_PAGEFAULT_FLAG_WRITE = 1, UFFD_PAGEFAULT_FLAG_WP = 2, UFFD_PAGEFAULT_FLAG_MINOR = 4;
    public const ulong UFFDIO_REGISTER_MODE_MISSING = 1, UFFDIO_REGISTER_MODE_WP = 2, UFFDIO_REGISTER_MODE_MINOR = 4;
    public const ulong UFFDIO_COPY_MODE_DONTWAKE = 1, UFFDIO_CONTINUE_MODE_DONTWAKE = 1, UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1;
    public const ulong UFFDIO_WRITEPROTECT_MODE_WP = 1;
}
