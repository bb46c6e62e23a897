using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// Per page of guest RAM: whether it holds data (a zero page is a hole in the memory file and is never read) and the
/// CRC32C of its 4 KiB, checked on every read. On disk: "FLPGIDX1", u64 pages, the data bitmap (u64 words), one u32
/// CRC per page, all little-endian; the manifest holds the CRC32C of the whole file.
/// </summary>
public sealed class PageIndex
{
    private static ReadOnlySpan<byte> Magic => "FLPGIDX1"u8;
    private readonly ulong[] _data;
    private readonly uint[] _crc;

    public ulong Pages { get; }
    public ulong DataPages { get; private set; }
    public ulong ZeroPages => Pages - DataPages;

    private PageIndex(ulong pages, ulong[] data, uint[] crc)
    {
        Pages = pages; _data = data; _crc = crc;
        ulong n = 0;
        foreach (var w in data) n += (ulong)ulong.PopCount(w);
        DataPages = n;
    }

    public static PageIndex Empty(ulong pages) => new(pages, new ulong[(pages + 63) / 64], new uint[pages]);

    public bool IsData(ulong page) => (_data[page >> 6] & (1UL << (int)(page & 63))) != 0;
    public uint CrcOf(ulong page) => _crc[page];

    internal void SetData(ulong page, uint crc)
    {
        if (!IsData(page)) DataPages++;
        _data[page >> 6] |= 1UL << (int)(page & 63);
        _crc[page] = crc;
    }

    /// <summary>The CRC a zero page would have: what a hole holds.</summary>
    public static readonly uint ZeroPageCrc = Crc32C.Compute(new byte[SnapshotFiles.PageSize]);

    /// <summary>Writes the index file; returns its CRC32C (for the manifest).</summary>
    public uint Write(string path)
    {
        var bytes = new byte[16 + _data.Length * 8 + _crc.Length * 4];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8), Pages);
        MemoryMarshal.AsBytes(_data.AsSpan()).CopyTo(bytes.AsSpan(16));
        MemoryMarshal.AsBytes(_crc.AsSpan()).CopyTo(bytes.AsSpan(16 + _data.Length * 8));
        File.WriteAllBytes(path, bytes);
        return Crc32C.Compute(bytes);
    }

    /// <summary>Reads and checks an index file against the manifest (page count, CRC); one-line <see cref="SnapshotException"/> otherwise.</summary>
    public static PageIndex Read(string path, ulong pages, uint expectedCrc)
    {
        if (!File.Exists(path)) throw new SnapshotException($"{path} is missing: the snapshot has no page index");
        var bytes = File.ReadAllBytes(path);
        var words = (int)((pages + 63) / 64);
        var size = 16L + words * 8L + (long)pages * 4;
        if (bytes.Length != size) throw new SnapshotException($"{path} is {(bytes.Length < size ? "truncated" : "too long")}: {bytes.Length} bytes, {size} expected for {pages} pages");
        var crc = Crc32C.Compute(bytes);
        if (crc != expectedCrc) throw new SnapshotException($"{path} fails its checksum: crc32c 0x{crc:x8}, the manifest says 0x{expectedCrc:x8}");
        if (!bytes.AsSpan(0, 8).SequenceEqual(Magic) || BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(8)) != pages)
            throw new SnapshotException($"{path} is not a page index of {pages} pages");
        var data = MemoryMarshal.Cast<byte, ulong>(bytes.AsSpan(16, words * 8)).ToArray();
        var crcs = MemoryMarshal.Cast<byte, uint>(bytes.AsSpan(16 + words * 8)).ToArray();
        return new PageIndex(pages, data, crcs);
    }
}
