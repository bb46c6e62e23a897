using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>Destination → source: u64 pages present on the destination, u64 pages in guest RAM (equal, or it is not sent).</summary>
public readonly record struct CompleteMessage(ulong PagesPresent, ulong PagesTotal)
{
    public const int Size = 16;

    public void Encode(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, PagesPresent);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], PagesTotal);
    }

    public static CompleteMessage Decode(ReadOnlySpan<byte> d) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt64LittleEndian(d[8..]));
}
