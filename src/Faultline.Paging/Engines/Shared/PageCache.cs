using Faultline.Kvm.Memory;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Shared;

/// <summary>A shmem guest's page cache, filled from an immediate source apart from the mapping (MINOR faults then only map it).</summary>
internal static class PageCache
{
    public static void Fill(GuestRegion ram, IImmediatePageSource source)
    {
        const int Chunk = 256 * 4096;
        var chunk = new byte[Chunk];
        for (ulong off = 0; off < ram.Size; off += Chunk)
        {
            var len = (int)Math.Min((ulong)Chunk, ram.Size - off);
            for (var p = 0; p < len; p += 4096) source.Read(ram.Base + off + (ulong)p, chunk.AsSpan(p, 4096));
            ram.WriteBacking(off, chunk.AsSpan(0, len));
        }
    }
}
