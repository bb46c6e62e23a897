using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>
/// A round-trip probe (<see cref="FrameType.Ping"/>, echoed as <see cref="FrameType.Pong"/>): u32 sequence number
/// (0 … count−1), u32 probes in this burst (the answering end stops after the last), i64 the sender's
/// CLOCK_MONOTONIC ns (echoed, so the sender needs no state per probe).
/// </summary>
public readonly record struct PingMessage(uint Sequence, uint Count, long SentNs)
{
    public const int Size = 16;
    /// <summary>The most probes one burst may announce.</summary>
    public const uint MaxCount = 10_000;

    public void Encode(Span<byte> dst)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dst, Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[4..], Count);
        BinaryPrimitives.WriteInt64LittleEndian(dst[8..], SentNs);
    }

    /// <summary>Decodes a probe; one that cannot belong to a burst (count 0 or above <see cref="MaxCount"/>, sequence past the count) is refused.</summary>
    public static PingMessage Decode(ReadOnlySpan<byte> p, string peer)
    {
        var m = new PingMessage(BinaryPrimitives.ReadUInt32LittleEndian(p), BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
            BinaryPrimitives.ReadInt64LittleEndian(p[8..]));
        if (m.Count is 0 or > MaxCount || m.Sequence >= m.Count)
            throw new MigrationException($"corrupt stream from {peer}: ping {m.Sequence} of a burst of {m.Count}");
        return m;
    }
}
