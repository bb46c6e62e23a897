using Faultline.Migration.Protocol;
using Faultline.Migration.Security;
using Faultline.Migration.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Faultline.Migration;

/// <summary>What both ends share: the link and the time limits. Every wait on the peer is bounded: nothing hangs.</summary>
public abstract record MigrationOptions
{
    /// <summary>Emulated one-way delay added to every frame this end sends (so each direction is delayed once when both ends set it).</summary>
    public TimeSpan LinkDelay { get; init; }
    /// <summary>Carry the demand path under SCHED_FIFO where the kernel allows it (false: nice values only); null leaves the process's choice as it is.</summary>
    public bool? RealTimeDemandPath { get; init; }
    /// <summary>Timestamp the first demands hop by hop and print them to stderr at the end (diagnostics).</summary>
    public bool Trace { get; init; }
    /// <summary>The EEVDF slice of this end's normal-priority migration threads and vCPUs (zero: the kernel's default); see ThreadPriority.Slice.</summary>
    public TimeSpan ThreadSlice { get; init; }
    /// <summary>The first frames of a connection (Hello, Layout) must arrive within this.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Building the destination VM (before the pause) must finish within this.</summary>
    public TimeSpan SetupTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>During post-copy, silence from the peer longer than this is a failure.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Once a frame has begun, the rest of it must arrive within this (see FrameReader.StallTimeout).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Where this end logs what is not a failure of its migration (a refused stray peer); the CLI writes it to stderr.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;
    /// <summary>Peer authentication (a pre-shared key) and TLS, for every connection; <see cref="PeerSecurity.None"/> by default (the CLI turns both on for an address that is not loopback).</summary>
    public PeerSecurity Security { get; init; } = PeerSecurity.None;
    /// <summary>Test seam: wraps each connection's channel (FaultPlan-style injection: disconnect, stall, corrupt).</summary>
    public Func<IByteChannel, ChannelRole, IByteChannel>? WrapChannel { get; init; }

    internal IByteChannel Wrap(IByteChannel c, ChannelRole role) => WrapChannel is null ? c : WrapChannel(c, role);
}
