using System.Buffers.Binary;
using Faultline.Guest;

namespace Faultline.Migration.Protocol;

/// <summary>
/// Where a vCPU's generation-stamped workload stood when the source paused it: the pass it was in (Write for pass 0,
/// VerifyThenWrite from pass 1 on), that pass's range and seeds. The destination lets the interrupted pass finish
/// (it verifies the rest of the range against <see cref="Seed"/> and writes <see cref="WriteSeed"/>), then verifies
/// the whole range against <see cref="WriteSeed"/>: every qword written before the pause is checked exactly once.
/// Wire: u8 workload, u8[3] reserved, u32 qwords per page, u64 start, u64 end, u64 seed, u64 seed2, u64 pass.
/// </summary>
public readonly record struct WorkloadProgress(Workload Workload, int QwordsPerPage, ulong Start, ulong End, ulong Seed, ulong Seed2, ulong Pass)
{
    public const int Size = 48;

    /// <summary>The generation the interrupted pass writes (and the whole range holds once it ends).</summary>
    public ulong WriteSeed => Workload == Workload.Write ? Seed : Seed2;

    public void Encode(Span<byte> d)
    {
        d[..Size].Clear();
        d[0] = (byte)Workload;
        BinaryPrimitives.WriteInt32LittleEndian(d[4..], QwordsPerPage);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], Start);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], End);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], Seed);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], Seed2);
        BinaryPrimitives.WriteUInt64LittleEndian(d[40..], Pass);
    }

    public static WorkloadProgress Decode(ReadOnlySpan<byte> d)
    {
        var w = (Workload)d[0];
        if (w is not (Workload.Write or Workload.VerifyThenWrite)) throw new MigrationException($"vCPU state: workload {d[0]} is not a generation pass");
        var q = BinaryPrimitives.ReadInt32LittleEndian(d[4..]);
        if (q is < 1 or > 512) throw new MigrationException($"vCPU state: {q} qwords per page is outside 1..512");
        return new WorkloadProgress(w, q, BinaryPrimitives.ReadUInt64LittleEndian(d[8..]), BinaryPrimitives.ReadUInt64LittleEndian(d[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(d[24..]), BinaryPrimitives.ReadUInt64LittleEndian(d[32..]), BinaryPrimitives.ReadUInt64LittleEndian(d[40..]));
    }
}
