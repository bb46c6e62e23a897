using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Paging.Tests;

/// <summary>
/// <see cref="IPagingEngine.TryInstallRun"/>: the pages of a run that are present already or owned by a fault path
/// are left alone, the others are installed exactly once (in sub-runs, one ioctl each), and the guest then reads
/// exactly the source's bytes everywhere.
/// </summary>
public sealed class InstallRunTests
{
    private const ulong Seed = 0x2000_0000_0000;

    public static TheoryData<PagingMode, Backing, UffdLayout> Engines() => new()
    {
        { PagingMode.Missing, Backing.Anonymous, UffdLayout.Single },
        { PagingMode.Missing, Backing.Anonymous, UffdLayout.PerVcpu },   // runs straddle two userfaultfds' ranges
        { PagingMode.Exits, Backing.Anonymous, UffdLayout.Single },
        { PagingMode.Exits, Backing.Anonymous, UffdLayout.PerVcpu },
        { PagingMode.Bitmap, Backing.Anonymous, UffdLayout.Single },
        { PagingMode.MissingBitmap, Backing.Anonymous, UffdLayout.Single },
        { PagingMode.Minor, Backing.Shmem, UffdLayout.Single },
        { PagingMode.Exits, Backing.Shmem, UffdLayout.Single },
        { PagingMode.Bitmap, Backing.Shmem, UffdLayout.Single },
    };

    [KvmTheory]
    [MemberData(nameof(Engines))]
    public void A_run_installs_only_the_pages_nobody_else_has_each_once_and_the_guest_reads_the_source_bytes(PagingMode mode, Backing backing, UffdLayout layout)
    {
        const int Vcpus = 2;
        using var machine = GuestMachine.Create(new MachineConfig(Vcpus, 512 * KiB, backing));   // 128 pages, 64 per vCPU
        var source = new PatternPageSource(Seed);
        using var engine = EngineFactory.Create(new PagingOptions(mode, backing, layout, Readers: Vcpus) { PrefillPageCache = false });
        engine.Start(machine, source);
        var t = engine.Tracker;
        var pages = (int)t.Pages;
        var ram = machine.Ram;

        // the state a migration's receiver meets: some pages installed already, some claimed by a fault path
        int[] present = [0, 5, 6, 40, 63, 64, 100];
        int[] owned = [1, 7, 62, 65, 101, 127];
        var page = new byte[4096];
        foreach (var p in present)
        {
            PatternPageSource.Fill(t.AddressOf((ulong)p), Seed, page);
            Assert.True(engine.Sink.Install(t.AddressOf((ulong)p), page));
        }
        foreach (var p in owned) Assert.True(t.TryClaim((ulong)p));

        // runs over all of guest RAM: [0, 32) [32, 96) (straddles the vCPU boundary at 64) [96, 128)
        var bytes = new byte[pages * 4096];
        for (var p = 0; p < pages; p++) PatternPageSource.Fill(t.AddressOf((ulong)p), Seed, bytes.AsSpan(p * 4096, 4096));
        var installed = new bool[pages];
        var total = 0;
        foreach (var (from, count) in new[] { (0, 32), (32, 64), (96, 32) })
            total += engine.Sink.InstallRun(t.AddressOf((ulong)from), count, bytes.AsSpan(from * 4096, count * 4096), installed.AsSpan(from, count));
        for (var p = 0; p < pages; p++)
            Assert.True(installed[p] == !(present.Contains(p) || owned.Contains(p)), $"page {p}: installed {installed[p]}");
        Assert.Equal(pages - present.Length - owned.Length, total);
        for (var p = 0; p < pages; p++)
            Assert.Equal(owned.Contains(p) ? PageTracker.Installing : PageTracker.Present, t.StateOf((ulong)p));

        // a second pass finds nothing to do, and never waits for the pages the "fault path" holds
        var again = new bool[pages];
        Assert.Equal(0, engine.Sink.InstallRun(t.AddressOf(0), pages, bytes, again));
        Assert.DoesNotContain(true, again);

        // the fault path gives its pages up without installing them: the guest's own faults fetch them from the source
        foreach (var p in owned) t.Abandon((ulong)p);
        var outcome = machine.Run(Workload.Verify, i => machine.ArgsFor(i, Seed, 512), PrivilegeLevel.User, engine, TimeSpan.FromMinutes(2))
            .ThrowIfFailed();
        Assert.Equal(0UL, outcome.TotalResult);                       // the guest compared every qword with the source's pattern
        var stats = engine.Snapshot();
        Assert.Equal(pages, stats.Installed);                         // every page exactly once: the runs' and the faults'
        Assert.Equal(owned.Length, source.PagesServed);               // only the abandoned pages came from the fault path
        engine.Dispose();
        for (var p = 0; p < pages; p++)
        {
            PatternPageSource.Fill(t.AddressOf((ulong)p), Seed, page);
            Assert.True(ram.Span(t.AddressOf((ulong)p), 4096).SequenceEqual(page), $"page {p} differs on the host");
        }
    }

    [KvmFact]
    public void Bad_runs_are_refused_before_anything_is_claimed()
    {
        using var machine = GuestMachine.Create(new MachineConfig(1, 64 * KiB, Backing.Anonymous));
        using var engine = EngineFactory.Create(new PagingOptions(PagingMode.Exits, Backing.Anonymous));
        engine.Start(machine, new PatternPageSource(Seed));
        var t = engine.Tracker;
        var bytes = new byte[17 * 4096];
        var installed = new bool[17];
        Assert.ThrowsAny<MigrationException>(() => engine.Sink.InstallRun(t.AddressOf(8), 9, bytes, installed));   // one page past the end
        Assert.Throws<ArgumentException>(() => engine.Sink.InstallRun(t.AddressOf(0), 4, bytes.AsSpan(0, 3 * 4096), installed));
        Assert.Throws<ArgumentException>(() => engine.Sink.InstallRun(t.AddressOf(0) + 8, 1, bytes, installed));
        Assert.Equal(0, t.PresentCount);
        for (ulong p = 0; p < t.Pages; p++) Assert.Equal(PageTracker.Missing, t.StateOf(p));
        Assert.Equal(0, engine.Sink.InstallRun(t.AddressOf(0), 0, default, installed));
    }
}
