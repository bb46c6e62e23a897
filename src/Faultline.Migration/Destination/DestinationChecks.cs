using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.Engines;

namespace Faultline.Migration.Destination;

/// <summary>
/// What the destination checks before it builds anything: its injection plan against its options, and the source's
/// layout (a guest it can't run is refused before the source pauses); and the mixed workload's part of its report.
/// </summary>
internal static class DestinationChecks
{
    /// <summary>A plan that kills a process is refused, before anything runs, where the options give no way to kill it.</summary>
    public static void Injections(DestinationOptions o)
    {
        if (o.Inject.Has(InjectionKind.KillSource) && o.KillSource is null)
            throw new UsageException("--inject kill-source: only where the source is this command's own child (migrate, not migrate dest)");
        if (o.Inject.Has(InjectionKind.KillDestination) && o.KillDestination is null)
            throw new UsageException("--inject kill-dest: only where the destination is a process of its own that may die (migrate dest)");
    }

    public static void Layout(DestinationOptions o, LayoutMessage l, ulong nonce)
    {
        var (program, tasks, apf) = o.Mixed is { } mx ? (GuestProgramKind.Tasks, mx.MemoryTasks, mx.Protocol) : (GuestProgramKind.Generations, 0, AsyncPfProtocol.X86);
        if (l.Program != program || l.MemoryTasks != tasks || (program == GuestProgramKind.Tasks && l.AsyncPf != apf))
            throw new MigrationException($"layout mismatch: the source runs {LayoutMessage.DescribeProgram(l.Program, l.MemoryTasks, l.AsyncPf)}, this destination expects {LayoutMessage.DescribeProgram(program, tasks, apf)} (--workload, --mem-tasks, --protocol)");
        if (l.Nonce != nonce) throw new MigrationException("layout mismatch: the layout belongs to another session");
        if (l.PageSize != Wire.PageSize) throw new MigrationException($"layout mismatch: source pages are {l.PageSize} bytes, this destination uses {Wire.PageSize}");
        if (l.RamBase != GuestLayout.RamBase) throw new MigrationException($"layout mismatch: source RAM starts at 0x{l.RamBase:x}, this build's guest at 0x{GuestLayout.RamBase:x}");
        if (l.Vcpus is 0 or > GuestLayout.MaxVcpus) throw new MigrationException($"layout mismatch: {l.Vcpus} vCPUs");
        if (l.RamSize == 0 || l.RamSize % (l.Vcpus * (ulong)Wire.PageSize) != 0) throw new MigrationException($"layout mismatch: {l.RamSize} bytes of RAM do not split into pages per vCPU");
        if (o.ExpectVcpus is { } v && v != l.Vcpus) throw new MigrationException($"layout mismatch: source has {l.Vcpus} vCPU(s), this destination expects {v}");
        if (o.ExpectRamBytes is { } r && r != l.RamSize) throw new MigrationException($"layout mismatch: source has {l.RamSize >> 20} MiB, this destination expects {r >> 20} MiB");
        Mappable(o, l.RamSize);
    }

    public static void Mappable(DestinationOptions o, ulong ramBytes)
    {
        if (o.MaxRamBytes is { } max && ramBytes > max)
            throw new MigrationException($"cannot map {ramBytes >> 20} MiB of guest memory (this destination allows {max >> 20} MiB)");
    }

    public static MixedReport MixedOf(DestinationOptions o, MixedWorkload mixed, DestinationGuest g, IPagingEngine en, long completeNs)
    {
        double during = 0, after = 0, afterNs = 0;
        for (var i = 0; i < g.ResumedNs.Length; i++)
        {
            during += (g.CpuAtPostcopyDone[i] - g.CpuAtResume[i]) / Math.Max(1e-9, (completeNs - g.ResumedNs[i]) / 1e9);
            var tail = g.FinishedNs[i] - completeNs;
            if (tail > 0) { after += (g.CpuAtFinish[i] - g.CpuAtPostcopyDone[i]) / (tail / 1e9); afterNs = Math.Max(afterNs, tail); }
        }
        var apf = (en as PagingEngine)?.AsyncPf;
        return new MixedReport
        {
            MemoryTasks = mixed.MemoryTasks, AsyncPfPolicy = o.AsyncPf.Mode.ToString().ToLowerInvariant(), Protocol = mixed.Protocol == AsyncPfProtocol.Arm ? "arm" : "x86",
            GuestEnabled = g.GuestAsyncPfEnabled,
            CpuIterPerSecPostcopy = during, CpuIterPerSecAfter = afterNs >= 5e6 ? after : null, AsyncPf = apf?.Snapshot(),
            Sdei = apf is Faultline.Paging.AsyncPf.Arm.ArmAsyncPf arm ? SdeiTotals(arm, g.ResumedNs.Length) : null,
        };
    }

    private static (long, long) SdeiTotals(Faultline.Paging.AsyncPf.Arm.ArmAsyncPf arm, int vcpus)
    {
        long dispatched = 0, completed = 0;
        for (var v = 0; v < vcpus; v++) { var c = arm.Sdei.CountsOf(v); dispatched += c.Dispatched; completed += c.Completed + c.Resumed; }
        return (dispatched, completed);
    }
}
