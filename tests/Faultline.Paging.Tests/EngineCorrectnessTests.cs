using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Bench;
using Faultline.Paging.Engines;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Paging.Tests;

public sealed class EngineCorrectnessTests
{
    public static TheoryData<PagingMode, Backing, int> EveryEngine()
    {
        var d = new TheoryData<PagingMode, Backing, int>();
        foreach (var v in new[] { 1, 2, 8 })
        {
            d.Add(PagingMode.None, Backing.Anonymous, v);
            d.Add(PagingMode.None, Backing.Shmem, v);
            d.Add(PagingMode.Missing, Backing.Anonymous, v);
            d.Add(PagingMode.Minor, Backing.Shmem, v);
            d.Add(PagingMode.Exits, Backing.Anonymous, v);
            d.Add(PagingMode.Exits, Backing.Shmem, v);
            d.Add(PagingMode.Bitmap, Backing.Anonymous, v);
            d.Add(PagingMode.Bitmap, Backing.Shmem, v);
            d.Add(PagingMode.MissingBitmap, Backing.Anonymous, v);
            d.Add(PagingMode.MinorBitmap, Backing.Shmem, v);
        }
        return d;
    }

    [KvmTheory]
    [MemberData(nameof(EveryEngine))]
    public void Guest_sees_exactly_the_source_bytes_and_each_page_is_installed_once_at_CPL3(PagingMode mode, Backing backing, int vcpus)
    {
        var r = PagingRun.Execute(new PagingRunSpec(new PagingOptions(mode, backing, Readers: vcpus), vcpus, 1 * MiB)
        {
            Workload = Workload.Verify, QwordsPerPage = 512,
        });
        Assert.Equal(0UL, r.GuestResult);          // the guest's own count of mismatching qwords
        Assert.Equal(0, r.HostMismatches);
        var expectedInstalls = mode == PagingMode.None ? 0 : (long)r.Pages;
        Assert.Equal(expectedInstalls, r.Stats.Installed);
        if (mode != PagingMode.None) Assert.True(r.Stats.Faults >= (long)r.Pages, $"faults {r.Stats.Faults} < pages {r.Pages}");
        if (mode is PagingMode.Bitmap or PagingMode.MissingBitmap or PagingMode.MinorBitmap)
            Assert.True(r.Stats.UserfaultExits > 0, "no vCPU fault went through the userfault bitmap");
        // one reader per userfaultfd is the only poller of its fd: it never wakes for a message another reader took
        if (mode is PagingMode.Missing or PagingMode.Minor && vcpus == 1) Assert.Equal(0, r.Stats.ReaderEmptyWakeups);
        Assert.True(r.Stats.ReaderEmptyWakeups <= r.Stats.ReaderFaults * vcpus, $"{r.Stats.ReaderEmptyWakeups} empty wake-ups for {r.Stats.ReaderFaults} faults");   // each fault wakes at most every other reader once
    }

    [KvmTheory]
    [InlineData(PagingMode.Missing, Backing.Anonymous)]
    [InlineData(PagingMode.Minor, Backing.Shmem)]
    [InlineData(PagingMode.Exits, Backing.Anonymous)]
    [InlineData(PagingMode.Exits, Backing.Shmem)]
    [InlineData(PagingMode.Bitmap, Backing.Anonymous)]
    [InlineData(PagingMode.MissingBitmap, Backing.Anonymous)]
    public void Every_engine_works_at_CPL0_too(PagingMode mode, Backing backing)
    {
        var r = PagingRun.Execute(new PagingRunSpec(new PagingOptions(mode, backing, Readers: 2), 2, 64 * KiB, PrivilegeLevel.Kernel)
        {
            Workload = Workload.Verify, QwordsPerPage = 2,
        });
        Assert.Equal(0UL, r.GuestResult);
        Assert.Equal(0, r.HostMismatches);
        Assert.Equal((long)r.Pages, r.Stats.Installed);
    }

    [KvmTheory]
    [InlineData(PagingMode.Missing, UffdLayout.PerVcpu)]
    [InlineData(PagingMode.Exits, UffdLayout.PerVcpu)]
    public void Per_vcpu_userfaultfds_serve_their_own_ranges(PagingMode mode, UffdLayout layout)
    {
        var r = PagingRun.Execute(new PagingRunSpec(new PagingOptions(mode, Backing.Anonymous, layout, Readers: 4), 4, 512 * KiB)
        {
            Workload = Workload.Write, Order = AccessOrder.Random,
        });
        Assert.Equal(0, r.HostMismatches);
        Assert.Equal((long)r.Pages, r.Stats.Installed);
    }

    [KvmFact]
    public void The_fault_path_allocates_nothing()
    {
        var r = PagingRun.Execute(new PagingRunSpec(new PagingOptions(PagingMode.Exits, Backing.Anonymous), 2, 4 * MiB));
        Assert.True(r.AllocBytesPerFault < 1.0, $"{r.AllocBytesPerFault:0.###} bytes allocated per fault");
        var m = PagingRun.Execute(new PagingRunSpec(new PagingOptions(PagingMode.Missing, Backing.Anonymous, Readers: 2), 2, 4 * MiB));
        Assert.True(m.AllocBytesPerFault < 1.0, $"{m.AllocBytesPerFault:0.###} bytes allocated per fault (readers)");
    }
}
