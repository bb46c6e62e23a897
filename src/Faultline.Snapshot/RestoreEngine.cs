using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Selection;

namespace Faultline.Snapshot;

/// <summary>
/// The engine a restore runs: the one asked for, checked against what this host supports (minor on a memfd, the others
/// on anonymous memory), or the selector's pick for anonymous memory (auto). Detecting the host builds a probe VM (KVM
/// Userfault is found by trying its memslot flag), so a restore runs this beside its snapshot checks.
/// </summary>
internal static class RestoreEngine
{
    public static (PagingMode Engine, string Reason) Choose(PagingMode? requested)
    {
        if (requested is PagingMode.None) return (PagingMode.None, "eager: every page read and installed before the first instruction");
        var caps = HostCapabilities.Detect();
        if (requested is not { } mode)
        {
            var c = EngineSelector.Evaluate(caps, Backing.Anonymous);
            return (c.Chosen, $"auto: {c.Reason}");
        }
        EngineSelector.Check(mode, caps, BackingOf(mode));
        return (mode, "chosen with --engine");
    }

    /// <summary>A minor engine needs a page cache: a memfd; every other engine runs on anonymous memory.</summary>
    public static Backing BackingOf(PagingMode mode) => mode is PagingMode.Minor or PagingMode.MinorBitmap ? Backing.Shmem : Backing.Anonymous;
}
