using Faultline.Guest.Probe;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging;

namespace Faultline.Cli;

/// <summary>
/// The engines this host can run, from what <c>probe</c> measured (userfaultfd features, native KVM Userfault, how a
/// CPL3 missing page comes back), for anonymous and shmem guest RAM. The order is what <c>faultline bench paging</c>
/// measured on this project's hosts (docs/bench.md, CPL3, 2 vCPUs × 64 MiB): a vCPU resolving its own fault (exits)
/// beats reader threads behind one wait queue (missing, minor), which beat the emulated userfault bitmap and the
/// combined bitmap engines. <c>none</c> (memory populated up front) is a baseline, never a pick.
/// </summary>
internal sealed record HostEngines(BackingEngines Anonymous, BackingEngines Shmem)
{
    private static readonly PagingMode[] Ranking =
        [PagingMode.Exits, PagingMode.Missing, PagingMode.Minor, PagingMode.Bitmap, PagingMode.MissingBitmap, PagingMode.MinorBitmap];

    public static HostEngines Evaluate(ProbeReport r) => new(For(r, Backing.Anonymous), For(r, Backing.Shmem));

    private static BackingEngines For(ProbeReport r, Backing backing)
    {
        var candidates = new List<EngineVerdict>(Ranking.Length);
        foreach (var mode in Ranking)
        {
            var why = Unsupported(mode, r, backing);
            candidates.Add(new EngineVerdict(mode, why is null, why ?? Supported(mode, r)));
        }
        var best = candidates.FirstOrDefault(c => c.Supported);
        var reason = best switch
        {
            null => "no demand-paging engine can run on this memory here",
            { Mode: PagingMode.Exits } when r.NativeUserfault => "the vCPU resolves its own fault (native KVM Userfault exits): no wait queue, no reader thread",
            { Mode: PagingMode.Exits } => "fastest here: the vCPU resolves its own fault, no wait queue or reader wake-up (bench paging, CPL3: exits ahead of reader threads)",
            _ => $"the fastest engine this host runs on {Name(backing)} memory ({best.Why})",
        };
        return new BackingEngines(backing, best?.Mode, reason, candidates);
    }

    private static bool Has(ProbeReport r, UffdFeatures f) => (r.UffdFeatures & f) == f;

    /// <summary>Null when the engine can run; otherwise what is missing.</summary>
    private static string? Unsupported(PagingMode mode, ProbeReport r, Backing backing)
    {
        var shmem = backing == Backing.Shmem;
        if (shmem && !Has(r, UffdFeatures.MinorShmem) && mode is not PagingMode.Missing)
            return "userfaultfd lacks MINOR faults on shmem (UFFD_FEATURE_MINOR_SHMEM)";
        return mode switch
        {
            PagingMode.Missing when shmem => "MISSING + UFFDIO_COPY is for anonymous memory (on shmem: minor)",
            PagingMode.Minor when !shmem => "MINOR faults exist only for a page cache (shmem backing)",
            PagingMode.Exits when !r.NativeUserfault && !Has(r, UffdFeatures.Sigbus) && !Has(r, UffdFeatures.ThreadId) =>
                "userfaultfd offers neither SIGBUS nor THREAD_ID, so a vCPU can't be made to exit on a missing page",
            PagingMode.Bitmap when !r.NativeUserfault && !Has(r, UffdFeatures.Sigbus) => "no native KVM_MEM_USERFAULT, and no SIGBUS userfaultfd to emulate it",
            PagingMode.Bitmap when !r.NativeUserfault && !shmem && !Has(r, UffdFeatures.Move) => "emulating the bitmap on anonymous memory needs UFFDIO_MOVE",
            PagingMode.MissingBitmap when shmem => "for anonymous memory (on shmem: minor+bitmap)",
            PagingMode.MinorBitmap when !shmem => "for shmem (on anonymous memory: missing+bitmap)",
            PagingMode.MissingBitmap or PagingMode.MinorBitmap when !r.NativeUserfault && !Has(r, UffdFeatures.ThreadId) =>
                "no native KVM_MEM_USERFAULT, and no THREAD_ID userfaultfd to emulate it",
            _ => null,
        };
    }

    private static string Supported(PagingMode mode, ProbeReport r) => mode switch
    {
        PagingMode.Exits when r.NativeUserfault => "native KVM_MEM_USERFAULT exits",
        PagingMode.Exits => r.Cpl3Fault.Kind switch
        {
            FaultExitKind.Efault => "SIGBUS userfaultfd; a CPL3 fault is a bare -EFAULT here, located by instruction decode",
            FaultExitKind.MemoryFault => "SIGBUS userfaultfd; KVM reports the address (KVM_EXIT_MEMORY_FAULT)",
            FaultExitKind.Mmio => "SIGBUS userfaultfd; a fault comes back as an MMIO exit with its address",
            _ => "SIGBUS userfaultfd exits",
        },
        PagingMode.Missing => "userfaultfd MISSING + UFFDIO_COPY by reader threads",
        PagingMode.Minor => "userfaultfd MINOR + UFFDIO_CONTINUE by reader threads",
        PagingMode.Bitmap => r.NativeUserfault ? "native KVM_MEM_USERFAULT bitmap" : "emulated KVM Userfault (bitmap + SIGBUS userfaultfd)",
        _ => r.NativeUserfault ? "native KVM_MEM_USERFAULT bitmap + userfaultfd readers" : "emulated KVM Userfault (bitmap + THREAD_ID userfaultfd)",
    };

    public static string Name(Backing b) => b == Backing.Shmem ? "shmem" : "anon";
}
