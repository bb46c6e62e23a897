using System.Buffers.Binary;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// The order of first touches of a recorded restore, kept beside the snapshot (workingset.bin): "FLWSET01", u64 pages
/// of guest RAM, u32 run count, then per run u32 first page and u32 length (consecutive touches compress into one run),
/// then a CRC32C of everything before it. A restore replays it: those pages are prefetched first, in that order.
/// </summary>
public static class WorkingSet
{
    private static ReadOnlySpan<byte> Magic => "FLWSET01"u8;

    public static void Write(string path, ReadOnlySpan<uint> touches, ulong pages)
    {
        var runs = new List<(uint First, uint Length)>();
        foreach (var p in touches)
        {
            if (runs.Count > 0 && runs[^1].First + runs[^1].Length == p) runs[^1] = (runs[^1].First, runs[^1].Length + 1);
            else runs.Add((p, 1));
        }
        var bytes = new byte[20 + runs.Count * 8 + 4];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8), pages);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(16), (uint)runs.Count);
        for (var i = 0; i < runs.Count; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(20 + i * 8), runs[i].First);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(24 + i * 8), runs[i].Length);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(bytes.Length - 4), Crc32C.Compute(bytes.AsSpan(0, bytes.Length - 4)));
        var tmp = path + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>The recorded pages in touch order, or empty when there is no recording; a damaged one is a <see cref="SnapshotException"/>.</summary>
    public static uint[] Read(string path, ulong pages)
    {
        if (!File.Exists(path)) return [];
        var b = File.ReadAllBytes(path);
        if (b.Length < 24 || !b.AsSpan(0, 8).SequenceEqual(Magic)) throw new SnapshotException($"{path} is not a working-set recording");
        var runs = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16));
        if ((long)b.Length != 24 + runs * 8L) throw new SnapshotException($"{path} is truncated");
        if (Crc32C.Compute(b.AsSpan(0, b.Length - 4)) != BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(b.Length - 4)))
            throw new SnapshotException($"{path} fails its checksum");
        if (BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8)) != pages) throw new SnapshotException($"{path} was recorded for another memory size");
        var order = new List<uint>();
        for (var i = 0; i < runs; i++)
        {
            var first = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(20 + i * 8));
            var len = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(24 + i * 8));
            if ((ulong)first + len > pages) throw new SnapshotException($"{path}: run {i} ends past the last page");
            for (uint k = 0; k < len; k++) order.Add(first + k);
        }
        return order.ToArray();
    }
}
