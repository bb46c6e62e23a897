using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Faultline.Kvm.Memory;

namespace Faultline.Migration.Destination;

/// <summary>
/// Every page exactly as it arrived, at its offset: received_sha256 is taken over this at the end, so the guest's
/// later writes don't matter. Anonymous memory, transparent huge pages where the kernel has them, populated when it
/// is created (before the source pauses): a first-touch 4 KiB fault costs ~4 µs on this host, more than installing
/// the page, and must not sit on the receive path. Zero pages are never written.
/// </summary>
internal sealed class ReceivedImage(ulong size) : IDisposable
{
    private readonly AnonymousMapping _memory = new(size, populate: true);

    public ulong Size => _memory.Size;

    /// <summary>Pages <paramref name="firstPage"/>.. (a whole number of pages in <paramref name="pages"/>) as they arrived.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public void Write(ulong firstPage, ReadOnlySpan<byte> pages)
    {
        if ((pages.Length & 4095) != 0 || pages.IsEmpty || firstPage >= Size >> 12)
            throw new ArgumentOutOfRangeException(nameof(firstPage), $"{pages.Length} bytes at page {firstPage} are not whole pages inside the received image");
        // nobody reads the image before the end: past the caches, which the install and the next frames need; one
        // copy (one fence) per contiguous run, not per page. The mapping checks the run's end.
        CacheHints.CopyNonTemporal(pages, _memory.Span(firstPage << 12, pages.Length));
    }

    public string Sha256Hex()
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        const int Chunk = 64 << 20;
        for (ulong off = 0; off < Size; off += Chunk)
            h.AppendData(_memory.Span(off, (int)Math.Min(Chunk, Size - off)));
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    public void Dispose() => _memory.Dispose();
}
