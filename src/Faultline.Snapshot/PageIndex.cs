using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// Per page of guest RAM: whether it holds data (a zero page is a hole in the memory file and is never read) and the
/// CRC32C of its 4 KiB, checked on every read. On disk: "FLPGIDX1", u64 pages, the data bitmap (u64 words), one u32
/// CRC per page, all little-endian; the manifest holds the CRC32C of the whole file.
/// <para>A restore maps the file read-only and reads it in place (<see cref="Read"/>): copying it into fresh arrays cost
/// one page fault per 4 KiB of new memory, twice (5 bytes per guest page: 6 ms of a 2 GiB restore's start here), while
/// the mapping shares the page cache's pages. <see cref="Empty"/> makes a writable index in pinned arrays, for a save.</para>
/// </summary>
public sealed unsafe class PageIndex : IDisposable
{
    private static ReadOnlySpan<byte> Magic => "FLPGIDX1"u8;
    private readonly ulong* _data;
    private readonly uint* _crc;
    private readonly ulong _words;
    private readonly ulong[]? _dataArray;   // pinned: a save's index
    private readonly uint[]? _crcArray;
    private readonly MemoryMappedFile? _file;   // a restore's index, read in place
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _mapped;

    public ulong Pages { get; }
    public ulong DataPages { get; private set; }
    public ulong ZeroPages => Pages - DataPages;

    private PageIndex(ulong pages, ulong[] data, uint[] crc)
    {
        Pages = pages; _words = (ulong)data.Length; _dataArray = data; _crcArray = crc;
        _data = (ulong*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(data));   // pinned arrays never move
        _crc = (uint*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(crc));
        CountData();
    }

    private PageIndex(ulong pages, MemoryMappedFile file, MemoryMappedViewAccessor view, byte* mapped, ulong words)
    {
        Pages = pages; _file = file; _view = view; _mapped = mapped; _words = words;
        _data = (ulong*)(mapped + 16);
        _crc = (uint*)(mapped + 16 + words * 8);
        CountData();
    }

    private void CountData()
    {
        ulong n = 0;
        for (ulong i = 0; i < _words; i++) n += (ulong)ulong.PopCount(_data[i]);
        DataPages = n;
    }

    public static PageIndex Empty(ulong pages) =>
        new(pages, GC.AllocateArray<ulong>((int)((pages + 63) / 64), pinned: true), GC.AllocateArray<uint>((int)pages, pinned: true));

    public bool IsData(ulong page) => (_data[page >> 6] & (1UL << (int)(page & 63))) != 0;
    public uint CrcOf(ulong page) => _crc[page];

    internal void SetData(ulong page, uint crc)
    {
        if (_dataArray is null) throw new InvalidOperationException("a page index read from a snapshot is read-only");
        if (!IsData(page)) DataPages++;
        _data[page >> 6] |= 1UL << (int)(page & 63);
        _crc[page] = crc;
    }

    /// <summary>The CRC a zero page would have: what a hole holds.</summary>
    public static readonly uint ZeroPageCrc = Crc32C.Compute(new byte[SnapshotFiles.PageSize]);

    /// <summary>Writes the index file; returns its CRC32C (for the manifest).</summary>
    public uint Write(string path)
    {
        var data = new ReadOnlySpan<byte>(_data, (int)(_words * 8));
        var crcs = new ReadOnlySpan<byte>(_crc, (int)(Pages * 4));
        Span<byte> header = stackalloc byte[16];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], Pages);
        using (var f = File.Create(path))
        {
            f.Write(header);
            f.Write(data);
            f.Write(crcs);
        }
        return Crc32C.Append(Crc32C.Append(Crc32C.Compute(header), data), crcs);
    }

    /// <summary>Maps and checks an index file against the manifest (size, page count, CRC); one-line <see cref="SnapshotException"/> otherwise, nothing left open.</summary>
    public static PageIndex Read(string path, ulong pages, uint expectedCrc)
    {
        if (!File.Exists(path)) throw new SnapshotException($"{path} is missing: the snapshot has no page index");
        var words = (pages + 63) / 64;
        var size = 16L + (long)words * 8L + (long)pages * 4;
        var length = new FileInfo(path).Length;
        if (length != size) throw new SnapshotException($"{path} is {(length < size ? "truncated" : "too long")}: {length} bytes, {size} expected for {pages} pages");
        MemoryMappedFile? file = null;
        MemoryMappedViewAccessor? view = null;
        byte* p = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = file.CreateViewAccessor(0, size, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            var bytes = new ReadOnlySpan<byte>(p, (int)size);
            var crc = Crc32C.Compute(bytes);
            if (crc != expectedCrc) throw new SnapshotException($"{path} fails its checksum: crc32c 0x{crc:x8}, the manifest says 0x{expectedCrc:x8}");
            if (!bytes[..8].SequenceEqual(Magic) || BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]) != pages)
                throw new SnapshotException($"{path} is not a page index of {pages} pages");
            return new PageIndex(pages, file, view, p, words);
        }
        catch (Exception e)
        {
            if (p != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            file?.Dispose();
            if (e is IOException or UnauthorizedAccessException) throw new SnapshotException($"cannot map {path}: {e.Message}");
            throw;
        }
    }

    public void Dispose()
    {
        if (_view is null || _mapped == null) return;
        _mapped = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file!.Dispose();
    }
}
