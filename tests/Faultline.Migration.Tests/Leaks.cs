using Faultline.Migration.Source;
using Faultline.TestKit;

namespace Faultline.Migration.Tests;

/// <summary>
/// The leak checks of the migration's failure paths, counted from /proc (<see cref="ProcessResources"/>): what a live
/// source may still hold after its destination failed, and that nothing at all is left once everything is disposed.
/// </summary>
internal static class Leaks
{
    /// <summary>
    /// With <paramref name="source"/> alive and its destination gone, this process holds, beyond <paramref name="before"/>,
    /// exactly the source's VM and vCPUs (no userfaultfd: nothing is paged on demand there) and at most its vCPU threads:
    /// whatever the destination had (userfaultfd, VM, vCPUs, receivers) is released.
    /// </summary>
    public static void OnlyTheSource(ProcessResources before, MigrationSource source)
    {
        var vcpus = source.Machine.Config.Vcpus;
        var expected = before.Kernel with { Vms = before.Kernel.Vms + 1, Vcpus = before.Kernel.Vcpus + vcpus };
        var mid = ProcessResources.Settled(before with { FaultlineThreads = before.FaultlineThreads + vcpus, Kernel = expected });
        Assert.Equal(expected, mid.Kernel);
        Assert.True(mid.FaultlineThreads <= before.FaultlineThreads + vcpus, $"fl- threads: {before.FaultlineThreads} → {mid.FaultlineThreads}");
    }

    /// <summary>Everything disposed: no more userfaultfds, VMs, vCPUs or fl- threads than at <paramref name="before"/>.</summary>
    public static ProcessResources NoneLeft(ProcessResources before)
    {
        var after = ProcessResources.Settled(before);
        after.AssertKernelObjectsWithin(before);
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, $"fl- threads: {before.FaultlineThreads} → {after.FaultlineThreads}");
        return after;
    }
}
