using System.Buffers.Binary;
using Faultline.Kvm.Memory;
using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Protocol;

/// <summary>
/// What the destination must build before the source pauses: u32 page size, u32 vCPUs, u64 RAM base, u64 RAM size,
/// u8 source backing, u8 guest program (0 the generation program, 1 the task kernel), u8 memory tasks per vCPU (task
/// kernel), u8 the task kernel's async-PF protocol (0 x86, 1 arm; version 7), u32 CRC-32C of the guest image (slot 0: page tables, descriptor tables, code, before any vCPU
/// ran), u64 session nonce (the urgent channel's Hello repeats it).
/// </summary>
public readonly record struct LayoutMessage(uint PageSize, uint Vcpus, ulong RamBase, ulong RamSize, Backing SourceBacking, uint ImageCrc, ulong Nonce,
    GuestProgramKind Program = GuestProgramKind.Generations, int MemoryTasks = 0, AsyncPfProtocol AsyncPf = AsyncPfProtocol.X86)
{
    public const int Size = 40;

    public ulong Pages => RamSize / PageSize;

    public void Encode(Span<byte> d)
    {
        d[..Size].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(d, PageSize);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], Vcpus);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], RamBase);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], RamSize);
        d[24] = (byte)SourceBacking;
        d[25] = (byte)Program;
        d[26] = (byte)MemoryTasks;
        d[27] = (byte)AsyncPf;
        BinaryPrimitives.WriteUInt32LittleEndian(d[28..], ImageCrc);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], Nonce);
    }

    public static LayoutMessage Decode(ReadOnlySpan<byte> d) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(d[8..]), BinaryPrimitives.ReadUInt64LittleEndian(d[16..]),
        (Backing)d[24], BinaryPrimitives.ReadUInt32LittleEndian(d[28..]), BinaryPrimitives.ReadUInt64LittleEndian(d[32..]),
        (GuestProgramKind)d[25], d[26], (AsyncPfProtocol)d[27]);

    public string Describe() => $"{Vcpus} vCPU(s), {RamSize >> 20} MiB at 0x{RamBase:x}, {PageSize}-byte pages";

    /// <summary>The guest program in words: "the generation program" or "the mixed workload with N memory task(s)".</summary>
    public static string DescribeProgram(GuestProgramKind p, int memoryTasks, AsyncPfProtocol asyncPf = AsyncPfProtocol.X86) => p switch
    {
        GuestProgramKind.Generations => "the generation workload",
        GuestProgramKind.Tasks => $"the mixed workload with {memoryTasks} memory task(s) per vCPU ({(asyncPf == AsyncPfProtocol.Arm ? "arm" : "x86")} async PF)",
        _ => $"guest program {(byte)p}",
    };
}

/// <summary>What the migrated guest runs (its state travels differently: all in registers, or also in the system region).</summary>
public enum GuestProgramKind : byte
{
    /// <summary>The generation program (sequential, random, hotset): every bit of its progress is in its registers.</summary>
    Generations = 0,
    /// <summary>The task kernel (the mixed workload): scheduler and tasks in the system region, async PF registered.</summary>
    Tasks = 1,
}
