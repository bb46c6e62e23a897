using System.Buffers.Binary;
using Faultline.Kvm.Memory;

namespace Faultline.Migration.Protocol;

/// <summary>
/// What the destination must build before the source pauses: u32 page size, u32 vCPUs, u64 RAM base, u64 RAM size,
/// u8 source backing, u8[3] reserved, u32 CRC-32C of the guest image (slot 0: page tables, descriptor tables, code),
/// u64 session nonce (the urgent channel's Hello repeats it).
/// </summary>
public readonly record struct LayoutMessage(uint PageSize, uint Vcpus, ulong RamBase, ulong RamSize, Backing SourceBacking, uint ImageCrc, ulong Nonce)
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
        BinaryPrimitives.WriteUInt32LittleEndian(d[28..], ImageCrc);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], Nonce);
    }

    public static LayoutMessage Decode(ReadOnlySpan<byte> d) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(d[8..]), BinaryPrimitives.ReadUInt64LittleEndian(d[16..]),
        (Backing)d[24], BinaryPrimitives.ReadUInt32LittleEndian(d[28..]), BinaryPrimitives.ReadUInt64LittleEndian(d[32..]));

    public string Describe() => $"{Vcpus} vCPU(s), {RamSize >> 20} MiB at 0x{RamBase:x}, {PageSize}-byte pages";
}
