using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Microsoft.Win32.SafeHandles;

namespace Faultline.Snapshot;

/// <summary>
/// Writes guest RAM as a sparse memory file: a zero page is skipped (a hole, as the file was sized up front), runs of
/// data pages are written straight from guest memory with one write each (up to 1 MiB), so saving streams at the
/// disk's speed. Computes the page index (data bit and CRC32C per page) and a CRC32C per 1 MiB chunk on the way.
/// </summary>
internal static class SnapshotWriter
{
    private const int Page = SnapshotFiles.PageSize;
    private const int MaxRunPages = 256;

    public static (PageIndex Index, uint[] ChunkCrcs, long BytesWritten) WriteMemory(string path, GuestRegion ram)
    {
        var pages = ram.PageCount;
        var index = PageIndex.Empty(pages);
        var chunks = new uint[(pages + SnapshotFiles.ChunkPages - 1) / SnapshotFiles.ChunkPages];
        long written = 0;
        using SafeFileHandle f = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.SetLength(f, (long)ram.Size);
        ulong runStart = 0, runLen = 0;
        for (ulong p = 0; p < pages; p++)
        {
            var span = ram.Span(ram.Base + p * Page, Page);
            var c = p / SnapshotFiles.ChunkPages;
            chunks[c] = Crc32C.Append(chunks[c], span);
            var isData = span.IndexOfAnyExcept((byte)0) >= 0;
            if (isData) index.SetData(p, Crc32C.Compute(span));
            if (isData && runLen > 0 && runStart + runLen == p && runLen < MaxRunPages) { runLen++; continue; }
            if (runLen > 0) written += Flush(f, ram, runStart, runLen);
            (runStart, runLen) = isData ? (p, 1UL) : (0UL, 0UL);
        }
        if (runLen > 0) written += Flush(f, ram, runStart, runLen);
        return (index, chunks, written);
    }

    private static long Flush(SafeFileHandle f, GuestRegion ram, ulong first, ulong count)
    {
        var bytes = (int)(count * Page);
        RandomAccess.Write(f, ram.Span(ram.Base + first * Page, bytes), (long)first * Page);
        return bytes;
    }
}

/// <summary>What a save did.</summary>
public sealed record SaveResult(SnapshotManifest Manifest, long BytesWritten, TimeSpan RunTime, TimeSpan WriteTime)
{
    public double WriteMiBPerSecond => WriteTime > TimeSpan.Zero ? Manifest.RamBytes / 1048576.0 / WriteTime.TotalSeconds : 0;
}
