using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Paging.Tests;

/// <summary>
/// The <c>minor</c> engine on a lazy page cache (<see cref="PagingOptions.PrefillPageCache"/> false, nothing allocated):
/// guest RAM is registered MISSING and MINOR; a page never in the memfd's page cache faults MISSING and goes in with
/// UFFDIO_COPY, a page put in the page cache through the view faults MINOR and is written and continued. The guest
/// checks every qword of every page against the source.
/// </summary>
public sealed class LazyMinorTests
{
    private const ulong Seed = 0x3000_0000_0000;
    private static readonly PagingOptions Lazy = new(PagingMode.Minor, Backing.Shmem, Readers: 2) { PrefillPageCache = false };

    [KvmFact]
    public void Pages_never_cached_fault_MISSING_cached_ones_fault_MINOR_and_each_is_installed_once_with_the_source_bytes()
    {
        using var machine = GuestMachine.Create(new MachineConfig(2, 1 * MiB, Backing.Shmem));   // 256 pages
        var ram = machine.Ram;
        var source = new CountingSource(Seed);
        using var engine = EngineFactory.Create(Lazy);
        engine.Start(machine, source);
        var pages = (long)engine.Tracker.Pages;
        Assert.Equal(0, ram.ResidentPages());   // the engine allocated nothing of the page cache

        // every third page is put in the page cache through the view, with bytes that are not the source's: the install
        // must write the source's bytes before UFFDIO_CONTINUE maps the page
        var poison = Enumerable.Repeat((byte)0xEE, 4096).ToArray();
        var cached = 0;
        for (ulong p = 0; p < (ulong)pages; p += 3, cached++) ram.WriteBacking(p << 12, poison);
        Assert.Equal(cached, ram.ResidentPages());

        var probe = new FirstRunProbe(engine, ram);
        var outcome = machine.Run(Workload.Verify, i => machine.ArgsFor(i, Seed, 512), PrivilegeLevel.User, probe, TimeSpan.FromMinutes(2))
            .ThrowIfFailed();
        Assert.Equal(0UL, outcome.TotalResult);            // the guest compared all 512 qwords of every page with the source
        Assert.Equal(cached, probe.ResidentAtFirstRun);    // at the first KVM_RUN: only the pages the test cached

        var s = engine.Snapshot();
        Assert.Equal(pages, s.Installed);                  // each page exactly once
        Assert.Equal(pages, source.InstalledByFaults);     // every install was a fault's (no fill here)
        Assert.Equal(cached, s.MinorFaults);               // a cached page faults MINOR ...
        Assert.Equal(pages - cached, s.MissingFaults);     // ... the others MISSING
        Assert.Equal(s.ReaderFaults, s.MinorFaults + s.MissingFaults);
        Assert.Equal(0, s.FaultPathAllocatedBytes);
        Assert.Equal(pages, ram.ResidentPages());
        Assert.Contains("MISSING+MINOR", s.Mechanism, StringComparison.Ordinal);
        engine.Dispose();
        AssertHostHoldsTheSource(machine, pages);
    }

    [KvmFact]
    public void A_fill_racing_the_faults_never_installs_a_page_twice_nor_lets_the_guest_see_a_torn_page()
    {
        for (var round = 0; round < 8; round++)
        {
            using var machine = GuestMachine.Create(new MachineConfig(2, 4 * MiB, Backing.Shmem));   // 1024 pages
            var ram = machine.Ram;
            var source = new CountingSource(Seed);
            using var engine = EngineFactory.Create(Lazy);
            engine.Start(machine, source);
            var t = engine.Tracker;
            var pages = (int)t.Pages;
            // some pages sit in the page cache already (the fill's runs meet them: UFFDIO_COPY says EEXIST, write + CONTINUE)
            var poison = Enumerable.Repeat((byte)0xEE, 4096).ToArray();
            for (var p = round; p < pages; p += 7) ram.WriteBacking((ulong)p << 12, poison);

            var bytes = new byte[pages * 4096];
            for (var p = 0; p < pages; p++) PatternPageSource.Fill(t.AddressOf((ulong)p), Seed, bytes.AsSpan(p * 4096, 4096));
            var installed = new bool[pages];
            long byFill = 0;
            var go = new ManualResetEventSlim();
            // the fill sweeps from the top of each vCPU's range down in runs of 16, while the vCPUs walk up theirs
            var fill = new Thread(() =>
            {
                go.Wait();
                const int Run = 16;
                for (var from = pages - Run; from >= 0; from -= Run)
                {
                    var n = engine.Sink.InstallRun(t.AddressOf((ulong)from), Run, bytes.AsSpan(from * 4096, Run * 4096), installed.AsSpan(from, Run));
                    Interlocked.Add(ref byFill, n);
                    if ((from / Run) % 4 == 0) Thread.Yield();
                }
            }) { Name = "fl-test-fill" };
            fill.Start();
            var probe = new FirstRunProbe(engine, ram, go);
            var outcome = machine.Run(Workload.Verify, i => machine.ArgsFor(i, Seed, 512), PrivilegeLevel.User, probe, TimeSpan.FromMinutes(2))
                .ThrowIfFailed();
            fill.Join();

            Assert.Equal(0UL, outcome.TotalResult);   // no torn page: the guest checked all 512 qwords of each
            var s = engine.Snapshot();
            Assert.Equal(pages, s.Installed);
            Assert.Equal(pages, byFill + source.InstalledByFaults);   // each page installed once, by the fill or by a fault
            Assert.Equal(byFill, installed.Count(b => b));
            Assert.True(s.MissingFaults + s.MinorFaults == s.ReaderFaults, $"round {round}: {s.MissingFaults} + {s.MinorFaults} != {s.ReaderFaults}");
            for (var p = 0; p < pages; p++) Assert.Equal(PageTracker.Present, t.StateOf((ulong)p));
            engine.Dispose();
            AssertHostHoldsTheSource(machine, pages);
        }
    }

    [KvmFact]
    public void A_page_cache_allocated_before_the_engine_starts_keeps_the_MINOR_only_engine()
    {
        // a migration destination allocates the page cache itself (MapBackingView) before it starts the engine
        using var machine = GuestMachine.Create(new MachineConfig(1, 256 * KiB, Backing.Shmem));
        machine.Ram.MapBackingView();
        Assert.True(machine.Ram.BackingAllocated);
        var source = new CountingSource(Seed);
        using var engine = EngineFactory.Create(Lazy with { Readers = 1 });
        engine.Start(machine, source);
        var outcome = machine.Run(Workload.Verify, i => machine.ArgsFor(i, Seed, 512), PrivilegeLevel.User, engine, TimeSpan.FromMinutes(1))
            .ThrowIfFailed();
        Assert.Equal(0UL, outcome.TotalResult);
        var s = engine.Snapshot();
        Assert.Equal((long)engine.Tracker.Pages, s.Installed);
        Assert.Equal(0, s.MissingFaults);          // every page was in the page cache: all faults MINOR
        Assert.Equal(s.ReaderFaults, s.MinorFaults);
        Assert.DoesNotContain("MISSING", s.Mechanism, StringComparison.Ordinal);
    }

    private static void AssertHostHoldsTheSource(GuestMachine machine, long pages)
    {
        var ram = machine.Ram;
        var page = new byte[4096];
        var back = new byte[4096];
        for (ulong p = 0; p < (ulong)pages; p++)
        {
            var gpa = ram.Base + (p << 12);
            PatternPageSource.Fill(gpa, Seed, page);
            ram.ReadBacking(p << 12, back);
            Assert.True(back.AsSpan().SequenceEqual(page), $"page {p}: the page cache differs from the source");
        }
    }

    /// <summary>The pattern source, counting the installs its requests made (a request whose page another path claimed installs nothing).</summary>
    private sealed class CountingSource(ulong seed) : IImmediatePageSource
    {
        private readonly PatternPageSource _inner = new(seed);
        private IPageSink? _sink;
        private long _installed;

        public long InstalledByFaults => Interlocked.Read(ref _installed);
        public bool CompletesOnRequest => true;
        public TimeSpan ExpectedLatency => TimeSpan.Zero;
        public void Start(IPageSink sink) => _sink = sink;
        public void Read(GuestAddress page, Span<byte> destination) => _inner.Read(page, destination);
        public string Describe() => "counting " + _inner.Describe();

        public void Request(GuestAddress page)
        {
            var buf = PageBuffer.Span;
            _inner.Read(page, buf);
            if (_sink!.Install(page, buf)) Interlocked.Increment(ref _installed);
        }
    }

    /// <summary>The engine as exit handler, counting the memfd's resident pages when the first vCPU thread is about to enter KVM_RUN.</summary>
    private sealed class FirstRunProbe(IPagingEngine engine, GuestRegion ram, ManualResetEventSlim? go = null) : IExitHandler
    {
        private int _first;
        public long ResidentAtFirstRun { get; private set; } = -1;

        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) => engine.TryHandleExit(vcpu, exit);
        public void OnVcpuLoopStart(VcpuLoop loop) => engine.OnVcpuLoopStart(loop);
        public void OnVcpuThreadStop(Vcpu vcpu) => engine.OnVcpuThreadStop(vcpu);

        public void OnVcpuThreadStart(Vcpu vcpu)
        {
            if (Interlocked.Exchange(ref _first, 1) == 0)
            {
                ResidentAtFirstRun = ram.ResidentPages();
                go?.Set();
            }
            engine.OnVcpuThreadStart(vcpu);
        }
    }
}
