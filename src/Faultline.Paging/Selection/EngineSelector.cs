using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Paging.Selection;

/// <summary>
/// <c>--engine auto</c>: picks the fastest demand-paging engine this host can run for a backing, and says why. The
/// order is what <c>faultline bench paging</c> measures on this project's hosts (docs/bench.md, CPL3, 2 vCPUs × 64 MiB,
/// pages/s): a vCPU resolving its own fault (exits, 57–61k) beats reader threads behind one wait queue (missing or
/// minor, 43–45k), which beat the emulated userfault bitmap (30k) and the combined bitmap rows (21–28k). Native
/// KVM Userfault, where the kernel has it, is the exit path without the SIGBUS userfaultfd, and is preferred then.
/// <c>none</c> (memory populated up front) is a baseline, never a pick. The selector never swaps an engine the user
/// named: an engine the host can't run is reported with its reason by <see cref="Check"/>.
/// </summary>
public static class EngineSelector
{
    /// <summary>Demand-paging engines, fastest first on the hosts measured.</summary>
    private static readonly PagingMode[] Ranking =
        [PagingMode.Exits, PagingMode.Missing, PagingMode.Minor, PagingMode.Bitmap, PagingMode.MissingBitmap, PagingMode.MinorBitmap];

    public static EngineChoice Evaluate(HostCapabilities caps, Backing backing)
    {
        var candidates = new List<EngineCandidate>(Ranking.Length + 1);
        foreach (var mode in Ranking)
        {
            var why = Unsupported(mode, caps, backing);
            candidates.Add(new EngineCandidate(mode, why is null, why ?? Supported(mode, caps)));
        }
        candidates.Add(new EngineCandidate(PagingMode.None, true, "baseline: memory populated before the guest runs, no demand paging (never picked)"));
        var best = candidates.FirstOrDefault(c => c.Supported && c.Mode != PagingMode.None)
            ?? throw new HostSupportException($"no demand-paging engine can run on {Name(backing)} memory here: "
                + string.Join("; ", candidates.Where(c => !c.Supported).Select(c => $"{c.Mode.Name()}: {c.Why}")));
        var reason = best.Mode switch
        {
            PagingMode.Exits when caps.NativeUserfault => "the vCPU resolves its own fault (native KVM Userfault exits): no wait queue, no reader thread",
            PagingMode.Exits => "fastest here: the vCPU resolves its own fault (SIGBUS userfaultfd exits), no wait queue or reader wake-up "
                + "(bench paging, CPL3, 2 vCPUs: exits 57–61k pages/s against 43–45k for reader threads)",
            _ => $"the fastest engine this host supports for {Name(backing)} memory ({best.Why})",
        };
        return new EngineChoice(best.Mode, reason, candidates);
    }

    /// <summary>Throws a one-line <see cref="HostSupportException"/> when <paramref name="mode"/> can't run on this host with <paramref name="backing"/>.</summary>
    public static void Check(PagingMode mode, HostCapabilities caps, Backing backing)
    {
        if (Unsupported(mode, caps, backing) is { } why) throw new HostSupportException($"engine {mode.Name()} can't run here: {why}");
    }

    /// <summary>Null when the engine can run; otherwise what is missing.</summary>
    private static string? Unsupported(PagingMode mode, HostCapabilities caps, Backing backing)
    {
        var shmem = backing == Backing.Shmem;
        if (shmem && !caps.Has(UffdFeatures.MinorShmem) && mode is not PagingMode.None and not PagingMode.Missing)
            return "userfaultfd lacks MINOR faults on shmem (UFFD_FEATURE_MINOR_SHMEM)";
        return mode switch
        {
            PagingMode.None => null,
            PagingMode.Missing when shmem => "MISSING + UFFDIO_COPY is for anonymous memory (on shmem: minor)",
            PagingMode.Missing => null,
            PagingMode.Minor when !shmem => "MINOR faults exist only for a page cache (shmem backing)",
            PagingMode.Minor => null,
            PagingMode.Exits when caps.NativeUserfault => null,
            PagingMode.Exits when !caps.Has(UffdFeatures.Sigbus) && !caps.Has(UffdFeatures.ThreadId) =>
                "userfaultfd offers neither SIGBUS nor THREAD_ID, so a vCPU can't be made to exit on a missing page",
            PagingMode.Exits => null,
            PagingMode.Bitmap when caps.NativeUserfault => null,
            PagingMode.Bitmap when !caps.Has(UffdFeatures.Sigbus) => "no native KVM_MEM_USERFAULT, and no SIGBUS userfaultfd to emulate it",
            PagingMode.Bitmap when !shmem && !caps.Has(UffdFeatures.Move) => "emulating the bitmap on anonymous memory needs UFFDIO_MOVE",
            PagingMode.Bitmap => null,
            PagingMode.MissingBitmap when shmem => "for anonymous memory (on shmem: minor+bitmap)",
            PagingMode.MinorBitmap when !shmem => "for shmem (on anonymous memory: missing+bitmap)",
            PagingMode.MissingBitmap or PagingMode.MinorBitmap when !caps.NativeUserfault && !caps.Has(UffdFeatures.ThreadId) =>
                "no native KVM_MEM_USERFAULT, and no THREAD_ID userfaultfd to emulate it",
            _ => null,
        };
    }

    private static string Supported(PagingMode mode, HostCapabilities caps) => mode switch
    {
        PagingMode.Exits when caps.NativeUserfault => "native KVM_MEM_USERFAULT exits",
        PagingMode.Exits => caps.Cpl3FaultExit switch
        {
            Faultline.Guest.Probe.FaultExitKind.Efault => "SIGBUS userfaultfd; a CPL3 fault is a bare -EFAULT here, located by instruction decode",
            Faultline.Guest.Probe.FaultExitKind.MemoryFault => "SIGBUS userfaultfd; KVM reports the address (KVM_EXIT_MEMORY_FAULT)",
            _ => "SIGBUS userfaultfd exits",
        },
        PagingMode.Missing => "userfaultfd MISSING + UFFDIO_COPY by reader threads",
        PagingMode.Minor => "userfaultfd MINOR + UFFDIO_CONTINUE by reader threads",
        PagingMode.Bitmap => caps.NativeUserfault ? "native KVM_MEM_USERFAULT bitmap" : "emulated KVM Userfault (bitmap + SIGBUS userfaultfd)",
        PagingMode.MissingBitmap or PagingMode.MinorBitmap => caps.NativeUserfault
            ? "native KVM_MEM_USERFAULT bitmap + userfaultfd readers"
            : "emulated KVM Userfault (bitmap + THREAD_ID userfaultfd)",
        _ => "",
    };

    private static string Name(Backing b) => b == Backing.Shmem ? "shmem" : "anonymous";
}
