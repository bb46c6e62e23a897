using System.Security.Cryptography;
using Faultline.Kvm.Memory;

namespace Faultline.Migration;

/// <summary>Digests over guest memory, read through the host mapping in chunks (RAM may exceed a span's 2 GiB).</summary>
public static class ImageHash
{
    private const int Chunk = 64 << 20;

    public static byte[] Sha256(GuestRegion region)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (ulong off = 0; off < region.Size; off += Chunk)
            h.AppendData(region.Span(region.Base + off, (int)Math.Min(Chunk, region.Size - off)));
        return h.GetHashAndReset();
    }

    public static string Sha256Hex(GuestRegion region) => Convert.ToHexStringLower(Sha256(region));

    public static uint Crc32C(GuestRegion region)
    {
        uint crc = 0;
        for (ulong off = 0; off < region.Size; off += Chunk)
            crc = Protocol.Crc32C.Append(crc, region.Span(region.Base + off, (int)Math.Min(Chunk, region.Size - off)));
        return crc;
    }
}
