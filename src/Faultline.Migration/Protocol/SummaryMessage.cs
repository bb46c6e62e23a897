using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>
/// Source → destination after Complete: sha256[32] of guest RAM when the guest paused, then u64 counters: pages sent
/// on demand, pages pushed, zero pages (of both), demand requests received, requests for pages already pushed,
/// bytes the source sent, and i64 nanoseconds from the pause to the vCPU state being on the wire; then (version 3) u8
/// how the source ran its demand path (<see cref="DemandPathPolicy"/>: 0 nice, 1 SCHED_FIFO) and u8[7] 0.
/// </summary>
public readonly record struct SummaryMessage(
    byte[] SourceSha256, ulong PagesDemand, ulong PagesPushed, ulong PagesZero, ulong DemandRequests, ulong DemandAlreadySent,
    ulong BytesSent, long PauseToStateSentNs, DemandPathPolicy SourcePolicy)
{
    public const int Size = 32 + 8 * 8;

    public void Encode(Span<byte> d)
    {
        SourceSha256.AsSpan(0, 32).CopyTo(d);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], PagesDemand);
        BinaryPrimitives.WriteUInt64LittleEndian(d[40..], PagesPushed);
        BinaryPrimitives.WriteUInt64LittleEndian(d[48..], PagesZero);
        BinaryPrimitives.WriteUInt64LittleEndian(d[56..], DemandRequests);
        BinaryPrimitives.WriteUInt64LittleEndian(d[64..], DemandAlreadySent);
        BinaryPrimitives.WriteUInt64LittleEndian(d[72..], BytesSent);
        BinaryPrimitives.WriteInt64LittleEndian(d[80..], PauseToStateSentNs);
        d.Slice(88, 8).Clear();
        d[88] = (byte)SourcePolicy;
    }

    public static SummaryMessage Decode(ReadOnlySpan<byte> d) => new(
        d[..32].ToArray(), BinaryPrimitives.ReadUInt64LittleEndian(d[32..]), BinaryPrimitives.ReadUInt64LittleEndian(d[40..]),
        BinaryPrimitives.ReadUInt64LittleEndian(d[48..]), BinaryPrimitives.ReadUInt64LittleEndian(d[56..]),
        BinaryPrimitives.ReadUInt64LittleEndian(d[64..]), BinaryPrimitives.ReadUInt64LittleEndian(d[72..]),
        BinaryPrimitives.ReadInt64LittleEndian(d[80..]), d[88] == 1 ? DemandPathPolicy.RealTime : DemandPathPolicy.Nice);
}
