using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>
/// Destination → source, first on a main channel that rejoins a session in post-copy (<see cref="FrameType.Recover"/>):
/// u64 guest pages, u32 the rejoin's number (1 for the first), u32 0, then the received-page bitmap, one bit per page
/// (bit i % 8 of byte i / 8: page i has arrived), ceil(pages / 8) bytes. The bitmap is taken after the lost
/// connection's receivers stopped, so it is final for everything that connection brought.
/// </summary>
public static class RecoverMessage
{
    public const int FixedSize = 16;

    /// <summary>The payload's length for a guest of <paramref name="pages"/> pages.</summary>
    public static int SizeFor(ulong pages) => FixedSize + (int)((pages + 7) / 8);

    /// <summary>Writes the message into <paramref name="dst"/> (<see cref="SizeFor"/> bytes), a bit set for each page <paramref name="arrived"/> says has come.</summary>
    public static void Encode(Span<byte> dst, ulong pages, uint rejoin, Func<ulong, bool> arrived)
    {
        dst[..SizeFor(pages)].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(dst, pages);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[8..], rejoin);
        var bits = dst[FixedSize..];
        for (ulong i = 0; i < pages; i++)
            if (arrived(i)) bits[(int)(i >> 3)] |= (byte)(1 << (int)(i & 7));
    }

    /// <summary>Checks a Recover payload against a guest of <paramref name="pages"/> pages; returns the rejoin number and the bitmap.</summary>
    public static (uint Rejoin, ReadOnlyMemory<byte> Bitmap) Decode(ReadOnlySpan<byte> p, ulong pages, string peer)
    {
        var said = BinaryPrimitives.ReadUInt64LittleEndian(p);
        if (said != pages) throw new MigrationException($"corrupt stream from {peer}: its received-page bitmap is for {said} pages, the guest has {pages}");
        if (p.Length != SizeFor(pages)) throw new MigrationException($"corrupt stream from {peer}: a received-page bitmap of {p.Length - FixedSize} bytes for {pages} pages");
        if (BinaryPrimitives.ReadUInt32LittleEndian(p[12..]) != 0) throw new MigrationException($"corrupt stream from {peer}: Recover frame with non-zero reserved bytes");
        var bits = p[FixedSize..];
        // bits past the last page must be clear: a bitmap that names pages the guest does not have is not ours
        if (pages % 8 != 0 && bits[^1] >> (int)(pages % 8) != 0)
            throw new MigrationException($"corrupt stream from {peer}: its received-page bitmap names pages past the guest's {pages}");
        return (BinaryPrimitives.ReadUInt32LittleEndian(p[8..]), bits.ToArray());
    }

    public static bool Arrived(ReadOnlySpan<byte> bitmap, ulong page) => (bitmap[(int)(page >> 3)] & (1 << (int)(page & 7))) != 0;
}

/// <summary>Source → destination, the answer to <see cref="FrameType.Recover"/>: u64 pages the source will send again, u64 pages it has not sent yet.</summary>
public readonly record struct RecoveredMessage(ulong PagesResent, ulong PagesUnsent)
{
    public const int Size = 16;

    public void Encode(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, PagesResent);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], PagesUnsent);
    }

    public static RecoveredMessage Decode(ReadOnlySpan<byte> d) => new(BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt64LittleEndian(d[8..]));
}
