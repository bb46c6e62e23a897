using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>Writes frames into spans (no allocation): header, payload checksum, header checksum.</summary>
public static class FrameCodec
{
    /// <summary>Writes a whole frame with <paramref name="payload"/> at <paramref name="dst"/>; returns its size.</summary>
    public static int Write(Span<byte> dst, FrameType type, byte flags, ReadOnlySpan<byte> payload)
    {
        payload.CopyTo(dst[Wire.HeaderSize..]);
        WriteHeader(dst, type, flags, (uint)payload.Length, Crc32C.Compute(payload));
        return Wire.HeaderSize + payload.Length;
    }

    /// <summary>Writes a page frame (index + bytes, one checksum over both); returns its size.</summary>
    public static int WritePage(Span<byte> dst, PageFlags flags, ulong index, ReadOnlySpan<byte> page)
    {
        var p = dst[Wire.HeaderSize..];
        BinaryPrimitives.WriteUInt64LittleEndian(p, index);
        page[..Wire.PageSize].CopyTo(p[8..]);
        var crc = Crc32C.Compute(p[..Wire.PagePayloadSize]);
        WriteHeader(dst, FrameType.Page, (byte)flags, Wire.PagePayloadSize, crc);
        return Wire.HeaderSize + Wire.PagePayloadSize;
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
