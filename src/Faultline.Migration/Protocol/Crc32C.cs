using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Faultline.Migration.Protocol;

/// <summary>
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every frame. SSE4.2's crc32 instruction
/// (8 bytes at a time) when the CPU has it, else slicing-by-8 tables. System.IO.Hashing is not on the project's package mirror.
/// </summary>
public static class Crc32C
{
    private const uint Poly = 0x82F63B78;
    private static readonly uint[] Table = BuildTable();

    /// <summary>Whether the hardware path is in use.</summary>
    public static bool IsHardwareAccelerated => Sse42.X64.IsSupported;

    /// <summary>CRC-32C of <paramref name="data"/> (initial value 0xFFFFFFFF, final xor 0xFFFFFFFF: the standard check value of "123456789" is 0xE3069283).</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);

    /// <summary>Continues a CRC-32C over more data: Append(Compute(a), b) == Compute(a + b).</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        var c = ~crc;
        c = Sse42.X64.IsSupported ? UpdateHardware(c, data) : UpdateSoftware(c, data);
        return ~c;
    }

    /// <summary>The software path on its own (tests compare it with the hardware path).</summary>
    public static uint ComputeSoftware(ReadOnlySpan<byte> data) => ~UpdateSoftware(~0u, data);

    private static uint UpdateHardware(uint c, ReadOnlySpan<byte> data)
    {
        ulong crc = c;
        var q = MemoryMarshal.Cast<byte, ulong>(data);
        var i = 0;
        for (; i + 4 <= q.Length; i += 4)
        {
            crc = Sse42.X64.Crc32(crc, q[i]);
            crc = Sse42.X64.Crc32(crc, q[i + 1]);
            crc = Sse42.X64.Crc32(crc, q[i + 2]);
            crc = Sse42.X64.Crc32(crc, q[i + 3]);
        }
        for (; i < q.Length; i++) crc = Sse42.X64.Crc32(crc, q[i]);
        var c32 = (uint)crc;
        foreach (var b in data[(q.Length * 8)..]) c32 = Sse42.Crc32(c32, b);
        return c32;
    }

    private static uint UpdateSoftware(uint c, ReadOnlySpan<byte> data)
    {
        var t = Table;
        while (data.Length >= 8)
        {
            var lo = BinaryPrimitives.ReadUInt32LittleEndian(data) ^ c;
            var hi = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
            c = t[7 * 256 + (lo & 0xFF)] ^ t[6 * 256 + ((lo >> 8) & 0xFF)] ^ t[5 * 256 + ((lo >> 16) & 0xFF)] ^ t[4 * 256 + (lo >> 24)]
              ^ t[3 * 256 + (hi & 0xFF)] ^ t[2 * 256 + ((hi >> 8) & 0xFF)] ^ t[1 * 256 + ((hi >> 16) & 0xFF)] ^ t[hi >> 24];
            data = data[8..];
        }
        foreach (var b in data) c = t[(c ^ b) & 0xFF] ^ (c >> 8);
        return c;
    }

    private static uint[] BuildTable()
    {
        var t = new uint[8 * 256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ Poly : c >> 1;
            t[i] = c;
        }
        for (var s = 1; s < 8; s++)
            for (var i = 0; i < 256; i++)
                t[s * 256 + i] = (t[(s - 1) * 256 + i] >> 8) ^ t[t[(s - 1) * 256 + i] & 0xFF];
        return t;
    }
}
