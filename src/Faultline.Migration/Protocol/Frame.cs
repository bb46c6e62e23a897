using System.Buffers.Binary;

namespace Faultline.Migration.Protocol;

/// <summary>A decoded frame; <see cref="Payload"/> points into the reader's buffer and is valid until its next Read.</summary>
public readonly ref struct Frame
{
    public FrameType Type { get; }
    public byte Flags { get; }
    public ReadOnlySpan<byte> Payload { get; }
    /// <summary>
    /// A page frame whose payload failed its checksum (only with <see cref="FrameReader.KeepDamagedPages"/>): nothing
    /// in its payload may be used, not even its page index.
    /// </summary>
    public bool Damaged { get; }

    public Frame(FrameType type, byte flags, ReadOnlySpan<byte> payload, bool damaged = false) { Type = type; Flags = flags; Payload = payload; Damaged = damaged; }

    /// <summary>The u64 at the start of the payload (page index, zero-page index, push-done count).</summary>
    public ulong Index => BinaryPrimitives.ReadUInt64LittleEndian(Payload);

    /// <summary>A page frame's 4096 bytes.</summary>
    public ReadOnlySpan<byte> PageBytes => Payload.Slice(8, Wire.PageSize);

    /// <summary>A page run's page count (checked against its length by the reader).</summary>
    public int RunCount => BinaryPrimitives.ReadUInt16LittleEndian(Payload[8..]);

    /// <summary>A page run's pages: <see cref="RunCount"/> × 4096 bytes, page <see cref="Index"/> first.</summary>
    public ReadOnlySpan<byte> RunPages => Payload[Wire.RunPreambleSize(RunCount)..];

    /// <summary>A page run's per-page CRC-32Cs (u32 little-endian each, checked by the reader), page <see cref="Index"/> first.</summary>
    public ReadOnlySpan<byte> RunCrcs => Payload.Slice(Wire.RunHeaderSize, 4 * RunCount);

    public string AbortMessage => System.Text.Encoding.UTF8.GetString(Payload).ReplaceLineEndings(" ");
}
