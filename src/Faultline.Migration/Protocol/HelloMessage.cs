using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>
/// The first frame on every connection, from both ends (frozen across versions):
/// magic[8] "FLTLNMIG", u16 version, u8 role, u8 reserved, u32 reserved, u64 session nonce.
/// </summary>
public readonly record struct HelloMessage(ushort Version, ChannelRole Role, ulong Nonce)
{
    public const int Size = 24;

    public void Encode(Span<byte> dst)
    {
        dst[..Size].Clear();
        Wire.Magic.CopyTo(dst);
        BinaryPrimitives.WriteUInt16LittleEndian(dst[8..], Version);
        dst[10] = (byte)Role;
        BinaryPrimitives.WriteUInt64LittleEndian(dst[16..], Nonce);
    }

    /// <summary>Decodes a Hello; a wrong magic means the peer is not a Faultline migration endpoint.</summary>
    public static HelloMessage Decode(ReadOnlySpan<byte> p, string peer)
    {
        if (p.Length != Size || !p[..8].SequenceEqual(Wire.Magic))
            throw new MigrationException($"{peer} is not a Faultline migration peer (bad hello magic)");
        return new HelloMessage(BinaryPrimitives.ReadUInt16LittleEndian(p[8..]), (ChannelRole)p[10], BinaryPrimitives.ReadUInt64LittleEndian(p[16..]));
    }
}
