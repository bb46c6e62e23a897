using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.TestKit;

namespace Faultline.Kvm.Tests;

/// <summary>Tests that measure the whole process (fds, threads, mappings) run alone, after every parallel test.</summary>
[CollectionDefinition(nameof(ProcessWide), DisableParallelization = true)]
public sealed class ProcessWide;

/// <summary>
/// Creating, running and disposing machines leaves nothing behind: every fd (/dev/kvm, VM, vCPUs, memfd, uffd, eventfd),
/// every mapping (guest RAM, system region, kvm_run) and every "fl-" thread goes with its owner.
/// </summary>
[Collection(nameof(ProcessWide))]
public sealed unsafe class LeakTests
{
    private const int Machines = 50;
    private const int Vcpus = 2;
    private const ulong RamBytes = Vcpus * 16 * GuestAddress.PageSize;
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The runtime maps and unmaps on its own: GC regions commit (a region's two lines become one), malloc arenas and
    /// thread stacks come and go. Measured over 50 machines with tiered compilation off in this test project: -1..+3
    /// lines on a quiet host, down to -9 on a loaded one (with tiering on, tier-1 rejits add ~35 W^X double-mapping
    /// lines after any warm-up). Only growth is a leak; our own mappings are compared exactly, and a leak of one
    /// mapping per machine would still be 50 lines here.
    /// </summary>
    private const int RuntimeMappingSlack = 16;

    private readonly List<(ulong Start, ulong End)> _anonymous = [];

    /// <summary>
    /// One machine's life, half of them on shmem. Every 10th runs a Write workload on both vCPU threads; every 10th+5 is
    /// served by a MISSING userfaultfd and its reader thread.
    /// </summary>
    private void Cycle(int i, Action<GuestMachine>? whileAlive = null)
    {
        using var m = GuestMachine.Create(new MachineConfig(Vcpus, RamBytes, i % 2 == 0 ? Backing.Anonymous : Backing.Shmem));
        _anonymous.Add((m.System.Host.Value, m.System.Host.Value + m.System.Size));
        if (m.Ram.Backing == Backing.Anonymous) _anonymous.Add((m.Ram.Host.Value, m.Ram.Host.Value + m.Ram.Size));
        whileAlive?.Invoke(m);
        switch (i % 10)
        {
            case 0:
            {
                var r = m.Run(Workload.Write, v => m.ArgsFor(v, seed: (ulong)i), PrivilegeLevel.User, timeout: RunTimeout).ThrowIfFailed();
                Assert.All(r.Vcpus, v => Assert.Equal(RamBytes / GuestAddress.PageSize / Vcpus, v.Result));
                break;
            }
            case 5:
            {
                using var uffd = Userfaultfd.Open(UffdFeatures.None);
                uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
                var zero = new byte[GuestAddress.PageSize];
                using var reader = new UffdReader(uffd, f =>
                {
                    // SAFETY: zero is pinned for the call; one page is read from it.
                    fixed (byte* p = zero) return uffd.Copy(new HostAddress(f.Address), p, GuestAddress.PageSize);
                });
                var r = m.Run(Workload.Read, v => m.ArgsFor(v), PrivilegeLevel.User, timeout: RunTimeout);
                reader.ThrowIfFailed();
                r.ThrowIfFailed();
                Assert.Equal(0UL, r.TotalResult);
                Assert.Equal((int)m.Ram.PageCount, reader.Log.Count);
                break;
            }
        }
    }

    private static void Quiesce()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    [KvmFact]
    public void Fifty_machines_created_run_and_disposed_leave_no_fd_thread_or_mapping_behind()
    {
        // warm-up: one of each kind of cycle, so lazily loaded libraries, JIT'd code and glibc's thread-stack cache settle
        for (var i = 0; i < 10; i++) Cycle(i);
        Quiesce();
        var baseline = ProcessResources.Settled(ProcessResources.Now());
        var ownBaseline = OwnMappings.Count(_anonymous);
        Assert.Equal(0, baseline.FaultlineThreads);
        Assert.Equal(0, ownBaseline);

        for (var i = 0; i < Machines; i++)
        {
            Cycle(i, i > 1 ? null : m =>
            {
                // the instruments see what a live machine holds: /dev/kvm, the VM and 2 vCPU fds (+ a memfd); 2 kvm_run mappings (+ shmem RAM)
                var live = ProcessResources.Now();
                var shmem = m.Ram.Backing == Backing.Shmem ? 1 : 0;
                Assert.True(live.Fds >= baseline.Fds + 4 + shmem, $"a live machine holds {live.Fds - baseline.Fds} more fds");
                Assert.Equal(baseline.Kernel with { Vms = baseline.Kernel.Vms + 1, Vcpus = baseline.Kernel.Vcpus + Vcpus }, live.Kernel);
                Assert.True(OwnMappings.Count(_anonymous) >= Vcpus + shmem + 1, "a live machine's mappings are not seen");
            });
        }
        Quiesce();
        var after = ProcessResources.Settled(baseline);

        Assert.Equal(baseline.Fds, after.Fds);
        Assert.Equal(baseline.Kernel, after.Kernel);
        Assert.Equal(baseline.FaultlineThreads, after.FaultlineThreads);
        Assert.Equal(0, OwnMappings.Count(_anonymous));
        Assert.True(after.Mappings <= baseline.Mappings + RuntimeMappingSlack,
            $"/proc/self/maps grew from {baseline.Mappings} to {after.Mappings} lines over {Machines} machines");
    }
}
