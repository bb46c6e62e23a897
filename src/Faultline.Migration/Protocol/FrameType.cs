namespace Faultline.Migration.Protocol;

/// <summary>Every frame on a migration connection. The numbers are wire values: never renumber, only add.</summary>
public enum FrameType : byte
{
    /// <summary>Both ends, first frame on every connection: magic, protocol version, role, session nonce.</summary>
    Hello = 0x01,
    /// <summary>Source → destination: page size, vCPU count, RAM base and size, backing, guest image checksum.</summary>
    Layout = 0x02,
    /// <summary>Destination → source: the VM is built and its memory mapped; the source may pause its guest now.</summary>
    Ready = 0x03,
    /// <summary>Source → destination: the paused vCPUs' state, one section list per vCPU.</summary>
    VcpuState = 0x04,
    /// <summary>Destination → source: page indices a vCPU is waiting for (urgent channel).</summary>
    Demand = 0x05,
    /// <summary>Source → destination: one page's bytes (index + 4096 bytes); flags say demand or push.</summary>
    Page = 0x06,
    /// <summary>Source → destination: a page of zeros, sent as its index only.</summary>
    ZeroPage = 0x07,
    /// <summary>Source → destination: the background push has sent every page it had to send.</summary>
    PushDone = 0x08,
    /// <summary>Destination → source: every page has been received and installed; the source may release its memory.</summary>
    Complete = 0x09,
    /// <summary>Source → destination: the source's digest and counters, after Complete.</summary>
    Summary = 0x0A,
    /// <summary>Either end: the sender gives up; payload is a one-line UTF-8 message.</summary>
    Abort = 0x0B,
    /// <summary>Destination → source: every vCPU runs again (u64: the destination's CLOCK_MONOTONIC ns); the push starts now, not inside the downtime.</summary>
    Resumed = 0x0C,
    /// <summary>
    /// Source → destination (main, version 2): up to <see cref="Wire.MaxRunPages"/> consecutive pages of the push in one
    /// frame: u64 first index, u16 count, u16 0, u32 0, u32 CRC-32C of each page, then the pages. The header's payload
    /// checksum covers everything before the pages; each page is covered by its own checksum.
    /// </summary>
    PageRun = 0x0D,
    /// <summary>
    /// Destination → source (urgent, version 3, before the pause): one probe of the link's round trip, answered at once
    /// with a <see cref="Pong"/> carrying the same payload: u32 sequence number, u32 probes in this burst, i64 the
    /// sender's CLOCK_MONOTONIC ns.
    /// </summary>
    Ping = 0x0E,
    /// <summary>Source → destination (urgent, version 3): the answer to a <see cref="Ping"/>, its payload echoed.</summary>
    Pong = 0x0F,
    /// <summary>
    /// Destination → source (main, version 5): the first frame after the Hellos of a connection that rejoins a session
    /// in post-copy: u64 guest pages, u32 which rejoin this is (1, 2, …), u32 0, then one bit per page (bit i of byte
    /// i/8 set: page i has arrived). The source sends every page whose bit is clear again.
    /// </summary>
    Recover = 0x10,
    /// <summary>Destination ← source (main, version 5): the answer to <see cref="Recover"/>: u64 pages it will send again, u64 pages never sent yet.</summary>
    Recovered = 0x11,
    /// <summary>
    /// Both ends (version 6, right after the Hellos of every connection, when the ends hold a key): 32 random bytes
    /// the peer must answer with an <see cref="AuthProof"/> over them (Security/PeerAuth).
    /// </summary>
    AuthChallenge = 0x12,
    /// <summary>Both ends (version 6): HMAC-SHA256 with the pre-shared key over both challenges, both roles, the session nonce and the TLS binding.</summary>
    AuthProof = 0x13,
}

/// <summary>Flag bits of a page frame (<see cref="FrameType.Page"/>, <see cref="FrameType.ZeroPage"/>, <see cref="FrameType.PageRun"/>).</summary>
[Flags]
public enum PageFlags : byte
{
    None = 0,
    /// <summary>Sent because the destination asked for it (urgent channel).</summary>
    Demand = 1,
    /// <summary>Sent by the background push (main channel).</summary>
    Push = 2,
}

/// <summary>Which connection of a session a <see cref="FrameType.Hello"/> opens.</summary>
public enum ChannelRole : byte
{
    /// <summary>The source's side of a connection (it answers both).</summary>
    Source = 0,
    /// <summary>Control frames, vCPU state and the background push.</summary>
    Main = 1,
    /// <summary>Demand requests and their pages only, so that they never queue behind the push (QEMU's postcopy-preempt channel).</summary>
    Urgent = 2,
}
