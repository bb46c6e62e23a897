using System.Buffers.Binary;
using System.Security.Cryptography;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;

namespace Faultline.Migration;

/// <summary>
/// The image digest both ends compare: SHA-256 over every page's CRC-32C in page order (u32 little-endian each). The
/// destination builds it as pages land, from the CRCs the frames carry (a page run has one per page, checked on
/// receive) or computed for a single page, so it keeps no second copy of guest memory: 4 bytes per page (0.1%). The
/// source computes it over its paused image. A page that arrives wrong, torn or at the wrong index changes it.
/// </summary>
public sealed class PageDigest
{
    private static readonly uint ZeroPageCrc = Crc32C.Compute(new byte[Wire.PageSize]);
    private readonly uint[] _crc;

    public PageDigest(ulong pages) => _crc = new uint[pages];

    public ulong Pages => (ulong)_crc.Length;

    /// <summary>Page <paramref name="index"/>'s first copy arrived with this CRC-32C (receiver threads; each page once).</summary>
    public void Record(ulong index, uint crc) => _crc[index] = crc;

    /// <summary>Page <paramref name="index"/>'s first copy arrived: <paramref name="page"/> (4096 bytes), or empty for a zero page.</summary>
    public void Record(ulong index, ReadOnlySpan<byte> page) => _crc[index] = page.IsEmpty ? ZeroPageCrc : Crc32C.Compute(page[..Wire.PageSize]);

    public byte[] Sha256()
    {
        var bytes = new byte[_crc.Length * 4];
        for (var i = 0; i < _crc.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(i * 4), Volatile.Read(ref _crc[i]));
        return SHA256.HashData(bytes);
    }

    public string Sha256Hex() => Convert.ToHexStringLower(Sha256());

    /// <summary>The digest of guest memory as it is now (the source's paused image).</summary>
    public static PageDigest Of(GuestRegion ram)
    {
        var d = new PageDigest(ram.PageCount);
        for (ulong i = 0; i < ram.PageCount; i++) d._crc[i] = Crc32C.Compute(ram.Span(ram.Base + (i << GuestAddress.PageShift), Wire.PageSize));
        return d;
    }
}
