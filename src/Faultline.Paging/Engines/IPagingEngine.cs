using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines;

/// <summary>
/// How a missing page is detected and who resolves it. Started on a machine before its vCPUs run; vCPU threads hand
/// it their exits (<see cref="IExitHandler"/>); reader threads, if any, are its own. Disposing stops the readers and
/// closes the userfaultfds; the machine's memory is the machine's.
/// </summary>
public interface IPagingEngine : IExitHandler, IDisposable
{
    PagingOptions Options { get; }
    PageTracker Tracker { get; }

    /// <summary>Prepares memory (populate, register, mark), starts readers. Pages come from <paramref name="source"/>.</summary>
    void Start(GuestMachine machine, IPageSource source);

    /// <summary>
    /// Installs a page's bytes unless it is present or being installed already (a migration's background push races
    /// demand faults here). Thread-safe and never waits; returns true if this call installed it.
    /// </summary>
    bool TryInstall(GuestAddress page, ReadOnlySpan<byte> bytes);

    /// <summary>
    /// <see cref="TryInstall"/> for <paramref name="count"/> consecutive pages from <paramref name="first"/>
    /// (<paramref name="bytes"/>: count × 4096): each page that is neither present nor being installed is claimed,
    /// and every maximal contiguous sub-run this call claimed is installed with one ioctl (UFFDIO_COPY, or a page-cache
    /// write + UFFDIO_CONTINUE) instead of one per page. Thread-safe and never waits; sets
    /// <paramref name="installed"/>[i] for the pages this call installed and returns how many.
    /// </summary>
    int TryInstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed);

    /// <summary>Counters so far (read at the end, not per fault).</summary>
    PagingStats Snapshot();
}
