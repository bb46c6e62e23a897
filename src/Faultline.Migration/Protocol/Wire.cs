namespace Faultline.Migration.Protocol;

/// <summary>
/// The frame format's constants. Every frame is a 16-byte header and a payload:
/// <code>
///  0  u16 sync        0xF17E: catches a peer that speaks another protocol at the first byte
///  2  u8  type        FrameType
///  3  u8  flags       per type (PageFlags for pages)
///  4  u32 length      payload bytes, checked against the type's limits before anything is read
///  8  u32 payload crc CRC-32C of the payload (for a page: its index and its 4096 bytes)
/// 12  u32 header crc  CRC-32C of bytes 0..11: a corrupt length is caught before it is trusted
/// </code>
/// All integers little-endian. The header layout and the Hello frame are frozen across versions, so any two
/// versions can tell each other apart.
/// </summary>
public static class Wire
{
    public const ushort Sync = 0xF17E;
    public const int HeaderSize = 16;
    public const int PageSize = 4096;
    public const int PagePayloadSize = 8 + PageSize;
    /// <summary>The protocol version this build speaks.</summary>
    public const ushort Version = 1;
    /// <summary>Hello's magic: "FLTLNMIG".</summary>
    public static ReadOnlySpan<byte> Magic => "FLTLNMIG"u8;
    /// <summary>The largest payload any frame may have (a vCPU state frame for 256 vCPUs fits).</summary>
    public const int MaxPayload = 1 << 20;
    public const int MaxDemandIndices = 512;
    public const int MaxAbortMessage = 4096;

    /// <summary>Whether <paramref name="length"/> is a legal payload length for <paramref name="type"/>; null if the type is unknown.</summary>
    public static bool? LengthAllowed(FrameType type, uint length) => type switch
    {
        FrameType.Hello => length == HelloMessage.Size,
        FrameType.Layout => length == LayoutMessage.Size,
        FrameType.Ready => length == 0,
        FrameType.VcpuState => length is >= VcpuStateMessage.MinSize and <= MaxPayload,
        FrameType.Demand => length is > 0 and <= MaxDemandIndices * 8 && length % 8 == 0,
        FrameType.Page => length == PagePayloadSize,
        FrameType.ZeroPage => length == 8,
        FrameType.PushDone => length == 8,
        FrameType.Complete => length == CompleteMessage.Size,
        FrameType.Summary => length == SummaryMessage.Size,
        FrameType.Abort => length <= MaxAbortMessage,
        FrameType.Resumed => length == 8,
        _ => null,
    };
}
