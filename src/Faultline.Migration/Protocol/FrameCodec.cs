using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Faultline.Kvm.Memory;

namespace Faultline.Migration.Protocol;

/// <summary>Writes frames into spans (no allocation): header, payload checksum, header checksum.</summary>
public static class FrameCodec
{
    /// <summary>Writes a whole frame with <paramref name="payload"/> at <paramref name="dst"/>; returns its size.</summary>
    public static int Write(Span<byte> dst, FrameType type, byte flags, ReadOnlySpan<byte> payload)
    {
        payload.CopyTo(dst[Wire.HeaderSize..]);
        WriteHeader(dst, type, flags, (uint)payload.Length, PayloadChecksum(type, payload));
        return Wire.HeaderSize + payload.Length;
    }

    /// <summary>The header's payload checksum: CRC-32C of the whole payload, or of a page run's preamble (its pages have their own).</summary>
    public static uint PayloadChecksum(FrameType type, ReadOnlySpan<byte> payload)
    {
        if (type != FrameType.PageRun || payload.Length < Wire.RunHeaderSize) return Crc32C.Compute(payload);
        var pre = Wire.RunPreambleSize(BinaryPrimitives.ReadUInt16LittleEndian(payload[8..]));
        return Crc32C.Compute(payload[..Math.Min(pre, payload.Length)]);
    }

    /// <summary>
    /// Writes a page run: <paramref name="count"/> consecutive pages from <paramref name="first"/>, taken from
    /// <paramref name="pages"/> (count × 4096 bytes), each with its CRC-32C; returns the frame's size.
    /// </summary>
    public static int WritePageRun(Span<byte> dst, PageFlags flags, ulong first, int count, ReadOnlySpan<byte> pages)
    {
        var head = WritePageRunHeader(dst, flags, first, count, pages);
        pages[..(count * Wire.PageSize)].CopyTo(dst[head..]);
        return head + count * Wire.PageSize;
    }

    /// <summary>
    /// Writes a page run's header and preamble (first index, count, each page's CRC-32C), everything but its pages,
    /// which must follow on the wire: a gather send takes them from where they are. Returns the bytes written,
    /// <see cref="Wire.HeaderSize"/> + <see cref="Wire.RunPreambleSize"/>(<paramref name="count"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public static int WritePageRunHeader(Span<byte> dst, PageFlags flags, ulong first, int count, ReadOnlySpan<byte> pages)
    {
        if (count is < 1 or > Wire.MaxRunPages) throw new ArgumentOutOfRangeException(nameof(count), $"a run has 1..{Wire.MaxRunPages} pages");
        if (pages.Length < count * Wire.PageSize) throw new ArgumentException($"a run of {count} pages needs {count * Wire.PageSize} bytes, not {pages.Length}", nameof(pages));
        var pre = Wire.RunPreambleSize(count);
        var p = dst.Slice(Wire.HeaderSize, pre);
        BinaryPrimitives.WriteUInt64LittleEndian(p, first);
        BinaryPrimitives.WriteUInt16LittleEndian(p[8..], (ushort)count);
        p.Slice(10, 6).Clear();
        for (var i = 0; i < count; i++)
        {
            // the CRC is each page's first full read from memory: start loading the page two ahead (halves the CRC's time)
            if (i + 2 < count) CacheHints.Prefetch(pages.Slice((i + 2) * Wire.PageSize, Wire.PageSize));
            BinaryPrimitives.WriteUInt32LittleEndian(p[(Wire.RunHeaderSize + 4 * i)..], Crc32C.Compute(pages.Slice(i * Wire.PageSize, Wire.PageSize)));
        }
        WriteHeader(dst, FrameType.PageRun, (byte)flags, (uint)Wire.RunPayloadSize(count), Crc32C.Compute(p));
        return Wire.HeaderSize + pre;
    }

    /// <summary>Writes a page frame (index + bytes, one checksum over both); returns its size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page (demand replies): full JIT at first call
    public static int WritePage(Span<byte> dst, PageFlags flags, ulong index, ReadOnlySpan<byte> page)
    {
        var head = WritePageHeader(dst, flags, index, page);
        page[..Wire.PageSize].CopyTo(dst[head..]);
        return head + Wire.PageSize;
    }

    /// <summary>
    /// Writes a page frame's header and index, everything but the page's bytes, which must follow on the wire (a
    /// gather send takes them from where they are); returns the bytes written (<see cref="Wire.HeaderSize"/> + 8).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public static int WritePageHeader(Span<byte> dst, PageFlags flags, ulong index, ReadOnlySpan<byte> page)
    {
        var p = dst.Slice(Wire.HeaderSize, 8);
        BinaryPrimitives.WriteUInt64LittleEndian(p, index);
        var crc = Crc32C.Append(Crc32C.Compute(p), page[..Wire.PageSize]);
        WriteHeader(dst, FrameType.Page, (byte)flags, Wire.PagePayloadSize, crc);
        return Wire.HeaderSize + 8;
    }

    /// <summary>Writes a page frame, or a zero-page marker when every byte is zero; returns its size.</summary>
    public static int WritePageOrZero(Span<byte> dst, PageFlags flags, ulong index, ReadOnlySpan<byte> page, out bool zero)
    {
        zero = page[..Wire.PageSize].IndexOfAnyExcept((byte)0) < 0;
        return zero ? WriteIndex(dst, FrameType.ZeroPage, (byte)flags, index) : WritePage(dst, flags, index, page);
    }

    /// <summary>Writes a frame whose payload is one u64 (zero page, push done).</summary>
    public static int WriteIndex(Span<byte> dst, FrameType type, byte flags, ulong value)
    {
        Span<byte> v = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, value);
        return Write(dst, type, flags, v);
    }

    public static void WriteHeader(Span<byte> dst, FrameType type, byte flags, uint length, uint payloadCrc)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(dst, Wire.Sync);
        dst[2] = (byte)type;
        dst[3] = flags;
        BinaryPrimitives.WriteUInt32LittleEndian(dst[4..], length);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[8..], payloadCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[12..], Crc32C.Compute(dst[..12]));
    }

    /// <summary>A frame in a new array (control frames, tests).</summary>
    public static byte[] ToArray(FrameType type, byte flags, ReadOnlySpan<byte> payload)
    {
        var b = new byte[Wire.HeaderSize + payload.Length];
        Write(b, type, flags, payload);
        return b;
    }
}
