using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>
/// The first frame on every connection, from both ends (frozen across versions):
/// magic[8] "FLTLNMIG", u16 version, u8 role, u8 flags (<see cref="HelloFlags"/>, version 5; 0 before), u32 reserved,
/// u64 session nonce.
/// </summary>
public readonly record struct HelloMessage(ushort Version, ChannelRole Role, ulong Nonce, HelloFlags Flags = HelloFlags.None)
{
    public const int Size = 24;

    public void Encode(Span<byte> dst)
    {
        dst[..Size].Clear();
        Wire.Magic.CopyTo(dst);
        BinaryPrimitives.WriteUInt16LittleEndian(dst[8..], Version);
        dst[10] = (byte)Role;
        dst[11] = (byte)Flags;
        BinaryPrimitives.WriteUInt64LittleEndian(dst[16..], Nonce);
    }

    /// <summary>Decodes a Hello; a wrong magic means the peer is not a Faultline migration endpoint.</summary>
    public static HelloMessage Decode(ReadOnlySpan<byte> p, string peer)
    {
        if (p.Length != Size || !p[..8].SequenceEqual(Wire.Magic))
            throw new MigrationException($"{peer} is not a Faultline migration peer (bad hello magic)");
        return new HelloMessage(BinaryPrimitives.ReadUInt16LittleEndian(p[8..]), (ChannelRole)p[10], BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
            (HelloFlags)p[11]);
    }
}

/// <summary>What a Hello announces about the connection (byte 11, version 5). Only for a clear message: each end decides from its own configuration, never from the peer's word.</summary>
[Flags]
public enum HelloFlags : byte
{
    None = 0,
    /// <summary>This end holds a key and proves it (<see cref="FrameType.AuthChallenge"/>, <see cref="FrameType.AuthProof"/>) right after the Hellos.</summary>
    Authenticates = 1,
}
