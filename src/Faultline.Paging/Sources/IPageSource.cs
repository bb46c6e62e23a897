using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Sources;

/// <summary>
/// Where a page's bytes come from: a generator, a snapshot file, a remote host. A fault path asks for a page with
/// <see cref="Request"/> and returns; whoever brings the bytes installs them through the <see cref="IPageSink"/> the
/// engine handed over in <see cref="Start"/>, and the fault path waits on the engine's <see cref="PageTracker"/>,
/// never on the source. An immediate source (<see cref="CompletesOnRequest"/>) installs before Request returns, on
/// the caller's thread. Implementations are thread-safe and allocate nothing per request.
/// </summary>
public interface IPageSource
{
    /// <summary>Called once by the engine before any request: completed pages go to <paramref name="sink"/>.</summary>
    void Start(IPageSink sink);

    /// <summary>
    /// Asks for the page at <paramref name="page"/> (page-aligned GPA), which the caller has marked requested in the
    /// tracker. Returns at once (a remote source queues it) or once it is installed (an immediate source).
    /// </summary>
    void Request(GuestAddress page);

    /// <summary>True when <see cref="Request"/> installs the page before it returns.</summary>
    bool CompletesOnRequest { get; }

    /// <summary>How long a request usually takes to complete (the link's round trip for a remote source, 0 immediate).</summary>
    TimeSpan ExpectedLatency { get; }

    /// <summary>A short description for reports.</summary>
    string Describe();
}

/// <summary>A source whose bytes are at hand (a generator, a file): it can be read directly, to populate memory or a page cache before the guest runs.</summary>
public interface IImmediatePageSource : IPageSource
{
    /// <summary>Fills <paramref name="destination"/> (4096 bytes) with the page at <paramref name="page"/>.</summary>
    void Read(GuestAddress page, Span<byte> destination);
}
