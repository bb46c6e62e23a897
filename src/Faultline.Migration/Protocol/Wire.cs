namespace Faultline.Migration.Protocol;

/// <summary>
/// The frame format's constants. Every frame is a 16-byte header and a payload:
/// <code>
///  0  u16 sync        0xF17E: catches a peer that speaks another protocol at the first byte
///  2  u8  type        FrameType
///  3  u8  flags       per type (PageFlags for pages)
///  4  u32 length      payload bytes, checked against the type's limits before anything is read
///  8  u32 payload crc CRC-32C of the payload (for a page: its index and its 4096 bytes; for a page run: its
///                     preamble only, since each of its pages carries its own checksum)
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
    /// <summary>The protocol version this build speaks (2: adds <see cref="FrameType.PageRun"/>; 3: adds <see cref="FrameType.Ping"/>/<see cref="FrameType.Pong"/> and the source's scheduling in the summary).</summary>
    public const ushort Version = 7;   // 4: no workload section in the vCPU state; 5: Recover/Recovered (a lost connection is rejoined); 6: Hello flags, AuthChallenge and AuthProof; 7: the layout's async-PF protocol, the SDEI state section
    /// <summary>Hello's magic: "FLTLNMIG".</summary>
    public static ReadOnlySpan<byte> Magic => "FLTLNMIG"u8;
    /// <summary>The largest payload any frame may have (a vCPU state frame for 256 vCPUs fits).</summary>
    public const int MaxPayload = 1 << 20;
    public const int MaxDemandIndices = 512;
    public const int MaxAbortMessage = 4096;
    /// <summary>The most pages one <see cref="FrameType.PageRun"/> may carry (256 KiB of page data).</summary>
    public const int MaxRunPages = 64;
    /// <summary>A page run's fixed preamble: u64 first index, u16 count, u16 0, u32 0; then u32 CRC-32C per page, then the pages.</summary>
    public const int RunHeaderSize = 16;
    /// <summary>An <see cref="FrameType.AuthChallenge"/>'s random bytes and an <see cref="FrameType.AuthProof"/>'s HMAC-SHA256.</summary>
    public const int AuthSize = 32;

    /// <summary>Payload bytes of a run of <paramref name="pages"/> pages.</summary>
    public static int RunPayloadSize(int pages) => RunHeaderSize + pages * (4 + PageSize);

    /// <summary>The part of a run's payload the header's payload checksum covers: the fixed preamble and the per-page checksums.</summary>
    public static int RunPreambleSize(int pages) => RunHeaderSize + 4 * pages;

    /// <summary>Pages in a run payload of <paramref name="length"/> bytes (a length <see cref="LengthAllowed"/> accepted).</summary>
    public static int RunPagesOf(uint length) => (int)((length - RunHeaderSize) / (4 + PageSize));

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
        FrameType.Ping or FrameType.Pong => length == PingMessage.Size,
        FrameType.Recover => length is >= RecoverMessage.FixedSize + 1 and <= RecoverMessage.FixedSize + MaxPayload / 2,
        FrameType.Recovered => length == RecoveredMessage.Size,
        FrameType.AuthChallenge or FrameType.AuthProof => length == AuthSize,
        FrameType.PageRun => length >= RunPayloadSize(1) && length <= RunPayloadSize(MaxRunPages) && (length - RunHeaderSize) % (4 + PageSize) == 0,
        _ => null,
    };
}
