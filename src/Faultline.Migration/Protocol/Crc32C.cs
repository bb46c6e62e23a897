using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Faultline.Migration.Protocol;

/// <summary>
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every frame. With SSE4.2, three
/// independent crc32 streams over thirds of a block (the instruction's latency is 3 cycles, its throughput 1), joined
/// with precomputed "append N zero bytes" operators (Mark Adler's crc32c.c way); else slicing-by-8 tables. System.IO.Hashing is not on the project's package mirror.
/// </summary>
public static class Crc32C
{
    private const uint Poly = 0x82F63B78;
    private static readonly uint[] Table = BuildTable();
    private const int Long = 1024, Short = 256;          // powers of two (the zeros operator below squares its way there)
    private static readonly uint[] LongShift = ZerosOperator(Long);
    private static readonly uint[] ShortShift = ZerosOperator(Short);

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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    private static uint UpdateHardware(uint c, ReadOnlySpan<byte> data)
    {
        var crc0 = c;
        while (data.Length >= 3 * Long) { crc0 = ThreeWay(crc0, data, Long, LongShift); data = data[(3 * Long)..]; }
        while (data.Length >= 3 * Short) { crc0 = ThreeWay(crc0, data, Short, ShortShift); data = data[(3 * Short)..]; }
        ulong crc = crc0;
        var q = MemoryMarshal.Cast<byte, ulong>(data);
        for (var i = 0; i < q.Length; i++) crc = Sse42.X64.Crc32(crc, q[i]);
        var c32 = (uint)crc;
        foreach (var b in data[(q.Length * 8)..]) c32 = Sse42.Crc32(c32, b);
        return c32;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    private static uint ThreeWay(uint crc, ReadOnlySpan<byte> data, int block, uint[] shift)
    {
        ref var a = ref Unsafe.As<byte, ulong>(ref MemoryMarshal.GetReference(data));
        ref var b = ref Unsafe.As<byte, ulong>(ref Unsafe.Add(ref MemoryMarshal.GetReference(data), block));
        ref var d = ref Unsafe.As<byte, ulong>(ref Unsafe.Add(ref MemoryMarshal.GetReference(data), 2 * block));
        ulong c0 = crc, c1 = 0, c2 = 0;
        var n = block / 8;
        // SAFETY: the caller checked data.Length >= 3 * block, so every qword read is inside data
        for (var i = 0; i < n; i++)
        {
            c0 = Sse42.X64.Crc32(c0, Unsafe.ReadUnaligned<ulong>(ref Unsafe.As<ulong, byte>(ref Unsafe.Add(ref a, i))));
            c1 = Sse42.X64.Crc32(c1, Unsafe.ReadUnaligned<ulong>(ref Unsafe.As<ulong, byte>(ref Unsafe.Add(ref b, i))));
            c2 = Sse42.X64.Crc32(c2, Unsafe.ReadUnaligned<ulong>(ref Unsafe.As<ulong, byte>(ref Unsafe.Add(ref d, i))));
        }
        var r = Shift(shift, (uint)c0) ^ (uint)c1;
        return Shift(shift, r) ^ (uint)c2;
    }

    private static uint Shift(uint[] z, uint crc) =>
        z[crc & 0xFF] ^ z[256 + ((crc >> 8) & 0xFF)] ^ z[512 + ((crc >> 16) & 0xFF)] ^ z[768 + (crc >> 24)];

    // GF(2) matrices over the CRC register: the operator that appends `len` zero bytes (len a power of two), as four byte tables
    private static uint[] ZerosOperator(int len)
    {
        var odd = new uint[32];
        var even = new uint[32];
        odd[0] = Poly;
        uint row = 1;
        for (var n = 1; n < 32; n++) { odd[n] = row; row <<= 1; }
        Square(even, odd);   // two zero bits
        Square(odd, even);   // four zero bits
        var l = len;
        uint[] op;
        while (true)
        {
            Square(even, odd);
            l >>= 1;
            if (l == 0) { op = even; break; }
            Square(odd, even);
            l >>= 1;
            if (l == 0) { op = odd; break; }
        }
        var z = new uint[4 * 256];
        for (uint n = 0; n < 256; n++)
        {
            z[n] = Times(op, n);
            z[256 + n] = Times(op, n << 8);
            z[512 + n] = Times(op, n << 16);
            z[768 + n] = Times(op, n << 24);
        }
        return z;
    }

    private static uint Times(uint[] mat, uint vec)
    {
        uint sum = 0;
        for (var i = 0; vec != 0; i++, vec >>= 1) if ((vec & 1) != 0) sum ^= mat[i];
        return sum;
    }

    private static void Square(uint[] square, uint[] mat)
    {
        for (var n = 0; n < 32; n++) square[n] = Times(mat, mat[n]);
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
