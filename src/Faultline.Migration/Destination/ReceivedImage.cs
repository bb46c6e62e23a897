using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Faultline.Kvm.Memory;

namespace Faultline.Migration.Destination;

/// <summary>
/// Every page exactly as it arrived, at its offset: received_sha256 is taken over this at the end, so the guest's
/// later writes don't matter. Anonymous memory, transparent huge pages where the kernel has them, populated when it
/// is created (before the source pauses): a first-touch 4 KiB fault costs ~4 µs on this host, more than installing
/// the page, and must not sit on the receive path. Zero pages are never written.
/// </summary>
internal sealed unsafe partial class ReceivedImage : IDisposable
{
    private const int PROT_READ = 1, PROT_WRITE = 2, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000, MADV_HUGEPAGE = 14, MADV_POPULATE_WRITE = 23;
    private byte* _base;

    public ulong Size { get; }

    public ReceivedImage(ulong size)
    {
        Size = size;
        var p = Mmap(null, (nuint)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == (void*)-1) throw new KvmException("mmap(received image)", Marshal.GetLastPInvokeError());
        Madvise(p, (nuint)size, MADV_HUGEPAGE);        // advisory: without THP it is just slower
        Madvise(p, (nuint)size, MADV_POPULATE_WRITE);  // fault it in now, before the source pauses, not on the receive path
        _base = (byte*)p;
    }

    /// <summary>Pages <paramref name="firstPage"/>.. (a whole number of pages in <paramref name="pages"/>) as they arrived.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public void Write(ulong firstPage, ReadOnlySpan<byte> pages)
    {
        var count = (ulong)pages.Length >> 12;
        if ((pages.Length & 4095) != 0 || count == 0 || firstPage >= Size >> 12 || count > (Size >> 12) - firstPage)
            throw new ArgumentOutOfRangeException(nameof(firstPage), $"pages {firstPage}+{count} are not inside the received image");
        // SAFETY: bounds checked above; the mapping lives until Dispose, which runs after the receivers are joined.
        // Nobody reads the image before the end: past the caches, which the install and the next frames need. One
        // copy (one fence) per contiguous run, not per page.
        CacheHints.CopyNonTemporal(pages, new Span<byte>(_base + (firstPage << 12), pages.Length));
    }

    public string Sha256Hex()
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        const int Chunk = 64 << 20;
        for (ulong off = 0; off < Size; off += Chunk)
            h.AppendData(new ReadOnlySpan<byte>(_base + off, (int)Math.Min(Chunk, Size - off)));
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    public void Dispose()
    {
        var b = _base;
        if (b == null) return;
        _base = null;
        Munmap(b, (nuint)Size);
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* addr, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(void* addr, nuint length, int advice);
}
