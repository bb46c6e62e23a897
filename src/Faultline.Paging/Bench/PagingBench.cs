using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Bench;

/// <summary>What `faultline bench paging` should run.</summary>
public sealed record BenchPlan(
    IReadOnlyList<PagingMode> Modes, IReadOnlyList<int> VcpuCounts, ulong MemPerVcpu, Backing? Backing, PrivilegeLevel Level,
    UffdLayout Uffds, int? Readers, AccessOrder Order, Workload Access, int Repeat, string? ReferencePath)
{
    public AddressRecovery AddressRecovery { get; init; } = AddressRecovery.Decode;

    /// <summary>Every run's spec, validated before any VM is created (bad combinations are usage errors, exit 2).</summary>
    public IReadOnlyList<PagingRunSpec> Specs()
    {
        if (Repeat < 1) throw new UsageException("--repeat must be at least 1");
        if (Modes.Count == 0 || VcpuCounts.Count == 0) throw new UsageException("nothing to run: give at least one mode and one vCPU count");
        if (MemPerVcpu == 0) throw new UsageException("--mem-per-vcpu must not be zero");
        if (ReferencePath is not null) ReferenceRunner.CheckUsable(ReferencePath);
        var specs = new List<PagingRunSpec>();
        foreach (var mode in Modes)
            foreach (var v in VcpuCounts)
            {
                var backing = Backing ?? (mode is PagingMode.Minor or PagingMode.MinorBitmap ? Kvm.Memory.Backing.Shmem : Kvm.Memory.Backing.Anonymous);
                var readers = Readers ?? v;
                var options = new PagingOptions(mode, backing, Uffds, readers) { AddressRecovery = AddressRecovery };
                options.Validate(v);
                new MachineConfig(v, MemPerVcpu * (ulong)v, backing).Validate();
                specs.Add(new PagingRunSpec(options, v, MemPerVcpu, Level) { Workload = Access, Order = Order });
            }
        return specs;
    }
}

/// <summary>
/// The kernel's demand_paging_test, in C#, over every engine, with the C reference run interleaved for the rows it
/// covers (ours, then refpaging, per repetition; medians reported).
/// </summary>
public static class PagingBench
{
    public static IReadOnlyList<BenchRow> Run(BenchPlan plan, Action<string, int, int>? progress = null, CancellationToken ct = default)
    {
        var specs = plan.Specs();
        var reference = plan.ReferencePath is null ? null : new ReferenceRunner(plan.ReferencePath);
        var rows = new List<BenchRow>();
        var total = specs.Count * plan.Repeat;
        var done = 0;
        foreach (var spec in specs)
        {
            var refMode = reference is null ? null : ReferenceRunner.ModeFor(spec);
            var ours = new List<PagingRunResult>();
            var theirs = new List<double>();
            for (var r = 0; r < plan.Repeat; r++)
            {
                ct.ThrowIfCancellationRequested();
                progress?.Invoke($"{spec.Options.Mode.Name()} {spec.Options.Backing} {spec.Vcpus} vCPU(s)", done++, total);
                var result = PagingRun.Execute(spec, ct);
                if (result.HostMismatches != 0)
                    throw new GuestException($"{spec.Options.Mode.Name()}: {result.HostMismatches} qwords of guest memory hold the wrong bytes");
                if (spec.Options.Mode != PagingMode.None && result.Stats.Installed != (long)result.PagesTouched)
                    throw new GuestException($"{spec.Options.Mode.Name()}: {result.Stats.Installed} pages installed for {result.PagesTouched} touched");
                ours.Add(result);
                if (refMode is not null) theirs.Add(reference!.Run(spec, refMode));
            }
            progress?.Invoke("", done, total);
            rows.Add(Summarize(spec, ours, theirs));
        }
        return rows;
    }

    private static BenchRow Summarize(PagingRunSpec spec, List<PagingRunResult> runs, List<double> reference)
    {
        var sorted = runs.OrderBy(r => r.PagesPerSecond).ToList();
        var median = sorted[sorted.Count / 2];
        var ramBytes = spec.MemPerVcpu * (ulong)spec.Vcpus;
        return new BenchRow(
            spec.Options.Mode.Name(), spec.Options.Backing == Backing.Shmem ? "shmem" : "anon",
            spec.Level == PrivilegeLevel.User ? "user" : "kernel", spec.Options.Uffds == UffdLayout.Single ? "single" : "per-vcpu",
            spec.Options.Readers, spec.Vcpus, spec.MemPerVcpu >> 20, median.Pages, median.Seconds, Median(runs.Select(r => r.PagesPerSecond)),
            runs.Max(r => r.AllocBytesPerFault), (double)median.Stats.EngineMemoryBytes / ramBytes, median.Stats.Mechanism,
            runs.Select(r => r.PagesPerSecond).ToArray())
        {
            ReferencePagesPerSec = reference.Count > 0 ? Median(reference) : null,
            ReferenceSamples = reference,
            Workload = spec.Order.ToString().ToLowerInvariant(),
            PagesTouched = median.PagesTouched,
            DemandFaults = median.Stats.Installed,
            EmptyWakeupsPerFault = median.Stats.ReaderFaults == 0 ? 0 : (double)median.Stats.ReaderEmptyWakeups / median.Stats.ReaderFaults,
        };
    }

    public static double Median(IEnumerable<double> values)
    {
        var s = values.OrderBy(v => v).ToArray();
        if (s.Length == 0) return 0;
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
