using Faultline.Guest;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines;

/// <summary>
/// How a missing page is detected and who resolves it (one type per mechanism). Started on a machine before its vCPUs
/// run; vCPU threads hand it their exits (<see cref="IExitHandler"/>); reader threads, if any, are its own. Pages come
/// from the source given to <see cref="Start"/>, which delivers them to <see cref="Sink"/> (the engine's installer)
/// when it has them. Disposing stops the readers and closes the userfaultfds; the machine's memory is the machine's.
/// </summary>
public interface IPagingEngine : IExitHandler, IDisposable
{
    PagingOptions Options { get; }
    PageTracker Tracker { get; }

    /// <summary>The engine's installer, where pages land whoever brings them (the source, a push, a prefetch).</summary>
    IPageSink Sink { get; }

    /// <summary>Prepares memory (populate, register, mark), starts readers, and starts <paramref name="source"/> on <see cref="Sink"/>.</summary>
    void Start(GuestMachine machine, IPageSource source);

    /// <summary>Counters so far (read at the end, not per fault).</summary>
    PagingStats Snapshot();
}

/// <summary>KVM Userfault's operations (seed 002): an engine with a per-page userfault bitmap.</summary>
public interface IUserfaultBitmap
{
    /// <summary>Whether KVM itself reads the bitmap (KVM_MEM_USERFAULT), or Faultline emulates it.</summary>
    bool IsNative { get; }
    /// <summary>Marks a page userfault: the next vCPU access exits, even if the page was present. Contents are kept.</summary>
    void MarkUserfault(Faultline.Kvm.Memory.GuestAddress page);
    /// <summary>Clears a page's bit: the page is fixed and its next access must not exit.</summary>
    void ClearUserfault(Faultline.Kvm.Memory.GuestAddress page);
    bool IsUserfault(Faultline.Kvm.Memory.GuestAddress page);
}
