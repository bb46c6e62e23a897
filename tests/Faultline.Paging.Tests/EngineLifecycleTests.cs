using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Bench;
using Faultline.Paging.Engines;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Paging.Tests;

public sealed class EngineLifecycleTests
{
    [KvmFact]
    public void Engines_start_and_stop_without_leaving_threads_uffds_or_mappings()
    {
        var specs = new[]
        {
            new PagingOptions(PagingMode.Missing, Backing.Anonymous, UffdLayout.PerVcpu, Readers: 4),
            new PagingOptions(PagingMode.Minor, Backing.Shmem, Readers: 2),
            new PagingOptions(PagingMode.Exits, Backing.Anonymous),
            new PagingOptions(PagingMode.MissingBitmap, Backing.Anonymous, Readers: 2),
            new PagingOptions(PagingMode.Bitmap, Backing.Shmem),
        };
        foreach (var o in specs) PagingRun.Execute(new PagingRunSpec(o, 2, 256 * KiB)); // warm-up: runtime libraries load once
        var before = ProcessResources.Now();
        for (var round = 0; round < 3; round++)
            foreach (var o in specs) PagingRun.Execute(new PagingRunSpec(o, 2, 256 * KiB));
        var after = ProcessResources.Settled(before);
        // a leak is growth (15 engine runs would leave 15+ of it); an earlier test's finalizer may close something meanwhile
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, $"fl- threads {before.FaultlineThreads} → {after.FaultlineThreads}");
        Assert.True(after.Fds <= before.Fds, $"fds {before.Fds} → {after.Fds}");
        Assert.True(after.OurMappings <= before.OurMappings, $"own mappings {before.OurMappings} → {after.OurMappings}");
    }

    [Theory]
    [InlineData(PagingMode.Minor, Backing.Anonymous, 1, "needs shmem")]
    [InlineData(PagingMode.MinorBitmap, Backing.Anonymous, 1, "needs shmem")]
    [InlineData(PagingMode.Missing, Backing.Shmem, 1, "anonymous")]
    [InlineData(PagingMode.Missing, Backing.Anonymous, 0, "--readers")]
    [InlineData(PagingMode.Missing, Backing.Anonymous, 1000, "--readers")]
    public void Impossible_combinations_are_usage_errors_before_any_vm(PagingMode mode, Backing backing, int readers, string message)
    {
        var ex = Assert.Throws<UsageException>(() => new PagingOptions(mode, backing, Readers: readers).Validate(2));
        Assert.Contains(message, ex.Message);
        Assert.Equal(2, ex.ExitCode);
    }

    [Fact]
    public void Zero_or_unmappable_memory_is_a_usage_error()
    {
        var zero = new BenchPlan([PagingMode.Missing], [2], 0, null, PrivilegeLevel.User, UffdLayout.Single, null,
            AccessOrder.Sequential, Workload.Write, 1, null);
        Assert.Contains("zero", Assert.Throws<UsageException>(() => zero.Specs()).Message);
        var huge = zero with { MemPerVcpu = 4 * GiB };
        Assert.Contains("MiB", Assert.Throws<UsageException>(() => huge.Specs()).Message);
        var bad = zero with { MemPerVcpu = 1 * MiB, Modes = [PagingMode.Minor], Backing = Backing.Anonymous };
        Assert.Contains("shmem", Assert.Throws<UsageException>(() => bad.Specs()).Message);
    }
}
