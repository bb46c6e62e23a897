using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Bench;

/// <summary>
/// Runs one engine under real vCPUs the way demand_paging_test does: a VM with N vCPUs, each on its own part of guest
/// RAM, all started together; the time is from the start barrier to the last join. Afterwards the host checks every
/// page against what the guest wrote and the page source gave.
/// </summary>
public static class PagingRun
{
    public static PagingRunResult Execute(PagingRunSpec spec, CancellationToken ct = default)
    {
        spec.Options.Validate(spec.Vcpus);
        var ram = spec.MemPerVcpu * (ulong)spec.Vcpus;
        var config = new MachineConfig(spec.Vcpus, ram, spec.Options.Backing);
        config.Validate();
        using var machine = GuestMachine.Create(config);
        var source = new PatternPageSource(spec.SourceSeed);
        using var engine = EngineFactory.Create(spec.Options);
        engine.Start(machine, source);
        var seed = spec.Workload == Workload.Verify ? spec.SourceSeed : 0;
        WorkloadArgs Args(int i) => machine.ArgsFor(i, seed, spec.QwordsPerPage, spec.Order);
        var outcome = machine.Run(spec.Workload, Args, spec.Level, engine, spec.Timeout, ct).ThrowIfFailed();
        // stop first: joins the readers, so a reader that woke the last vCPU has also counted its install;
        // and unregisters, so a page never installed now reads as zero and fails the check below
        engine.Dispose();
        var stats = engine.Snapshot();
        // the host twin of each vCPU's page order says which pages the guest touched (all of them unless hotset)
        var touched = new bool[ram >> 12];
        ulong pagesTouched = 0;
        for (var i = 0; i < spec.Vcpus; i++)
        {
            var first = (machine.RangeOf(i).Start.Value - machine.Ram.Base.Value) >> 12;
            foreach (var p in Args(i).TouchedPages()) { touched[first + p] = true; pagesTouched++; }
        }
        var wrong = HostCheck(machine.Ram, spec, source, touched);
        return new PagingRunResult(spec, ram >> 12, outcome.Elapsed.TotalSeconds, stats, outcome.TotalResult, wrong) { PagesTouched = pagesTouched };
    }

    /// <summary>
    /// Every qword of every page: in a touched page the ones the guest wrote hold their GPA, the rest the source's
    /// pattern; a page the guest never touched holds the source's pattern (populated up front) or zeros (never installed).
    /// </summary>
    private static long HostCheck(GuestRegion ram, PagingRunSpec spec, PatternPageSource source, bool[] touched)
    {
        long wrong = 0;
        var writes = spec.Workload == Workload.Write ? spec.QwordsPerPage : 0;
        for (var page = ram.Base.Value; page < ram.End.Value; page += 4096)
        {
            var span = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(ram.Span(new GuestAddress(page), 4096));
            var isTouched = touched[(page - ram.Base.Value) >> 12];
            var zeros = !isTouched && span.IndexOfAnyExcept(0UL) < 0;
            for (var q = 0; q < 512 && !zeros; q++)
            {
                var a = page + (ulong)q * 8;
                var expected = isTouched && q < writes ? a : source.ValueAt(new GuestAddress(a));
                if (span[q] != expected) wrong++;
            }
        }
        return wrong;
    }
}
