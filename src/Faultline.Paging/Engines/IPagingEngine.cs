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

    /// <summary>Counters so far (read at the end, not per fault).</summary>
    PagingStats Snapshot();
}
