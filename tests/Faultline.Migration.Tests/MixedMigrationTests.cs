using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Source;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;
using Faultline.TestKit;
using Xunit.Abstractions;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>
/// The mixed workload (the task kernel, its scheduler in the system region, async PF registered by the guest) migrated
/// post-copy over a real socket with a 1 ms delay line: the destination takes the task kernel's state and the async-PF
/// registration with each vCPU, its faults go async where the policy says so, and every memory task checks every page
/// of its range after the resume.
/// </summary>
public sealed class MixedMigrationTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(1);

    private MigrationHarness.Outcome Migrate(int vcpus, int memTasks, AsyncPfMode policy, bool guestEnables = true, AsyncPfProtocol protocol = AsyncPfProtocol.X86)
    {
        var mixed = new MixedWorkload(memTasks) { GuestAsyncPf = guestEnables, Protocol = protocol };
        return MigrationHarness.Run(new SourceOptions(vcpus, 16 * MiB) { Mixed = mixed, LinkDelay = Delay },
            a => new DestinationOptions(a, PagingMode.Exits, Backing.Anonymous) { Mixed = mixed, AsyncPf = new AsyncPfOptions(policy), LinkDelay = Delay, GuestTimeout = TimeSpan.FromSeconds(60) });
    }

    [KvmTheory]
    [InlineData(1, 1, AsyncPfMode.Always, AsyncPfProtocol.X86)]
    [InlineData(2, 2, AsyncPfMode.Auto, AsyncPfProtocol.X86)]
    [InlineData(1, 1, AsyncPfMode.Always, AsyncPfProtocol.Arm)]   // the SDEI registration and the ENABLE word travel
    [InlineData(2, 2, AsyncPfMode.Auto, AsyncPfProtocol.Arm)]
    public void Faults_go_async_during_a_real_post_copy_and_every_page_is_checked(int vcpus, int memTasks, AsyncPfMode policy, AsyncPfProtocol protocol)
    {
        var o = Migrate(vcpus, memTasks, policy, protocol: protocol);
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        Assert.Null(o.SourceError);
        var r = o.Report!;
        output.WriteLine(r.ToJson());
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.Equal((long)r.PagesTotal, r.EngineInstalled);
        var m = r.Mixed!;
        Assert.True(m.GuestEnabled, "the guest's async-PF registration did not travel");
        Assert.Equal(protocol == AsyncPfProtocol.Arm ? "arm" : "x86", m.Protocol);
        if (protocol == AsyncPfProtocol.Arm)
        {
            // each "not present" entered the handler the guest had registered on the source, and each handler completed
            Assert.Equal(m.AsyncPf!.NotPresent, m.Sdei!.Value.Dispatched);
            Assert.Equal(m.Sdei.Value.Dispatched, m.Sdei.Value.Completed);
        }
        else Assert.Null(m.Sdei);
        var a = m.AsyncPf!;
        // a 1 ms link: the first access of each vCPU after its resume finds its page on the wire, and auto finds 2 ms worth it
        Assert.True(a.NotPresent >= vcpus, $"{a.NotPresent} async faults");
        Assert.Equal(a.NotPresent, a.ReadyDelivered);               // every "not present" got its "page ready"
        Assert.Equal(0, a.SyncPolicy);
        Assert.True(m.CpuIterPerSecPostcopy > 0, "the CPU task made no progress during the post-copy");
    }

    [KvmFact]
    public void With_async_pf_never_every_fault_waits_and_the_guest_still_checks_every_page()
    {
        var o = Migrate(2, 1, AsyncPfMode.Never);
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        var r = o.Report!;
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(r.SourceSha256, r.ReceivedSha256);
        Assert.True(r.Mixed!.GuestEnabled);
        Assert.Null(r.Mixed.AsyncPf);                                // no async host: nothing was offered
        Assert.True(r.FaultLatencyUs.Count > 0, "no fault waited");
    }

    [KvmFact]
    public void A_guest_that_never_enabled_async_pf_gets_only_synchronous_faults()
    {
        var o = Migrate(1, 1, AsyncPfMode.Always, guestEnables: false);
        using var src = o.SourceEnd;
        Assert.Null(o.DestinationError);
        var m = o.Report!.Mixed!;
        Assert.False(m.GuestEnabled);
        Assert.Equal(0, m.AsyncPf!.NotPresent);
        Assert.True(m.AsyncPf.SyncNotEnabled > 0);
        Assert.Equal(0UL, o.Report.GuestMismatches);
    }

    [KvmFact]
    public void A_destination_expecting_another_program_is_refused_before_the_pause()
    {
        var o = MigrationHarness.Run(new SourceOptions(1, 4 * MiB) { Mixed = new MixedWorkload(2) },
            a => new DestinationOptions(a, PagingMode.Exits, Backing.Anonymous) { Mixed = new MixedWorkload(1) });
        using var src = o.SourceEnd;
        Assert.NotNull(o.DestinationError);
        Assert.Contains("the source runs the mixed workload with 2 memory task(s) per vCPU (x86 async PF), this destination expects the mixed workload with 1", o.DestinationError.Message);
        Assert.False(src.Paused);
        o = MigrationHarness.Run(src, a => new DestinationOptions(a, PagingMode.Exits, Backing.Anonymous));
        Assert.Contains("this destination expects the generation workload", o.DestinationError!.Message);
        Assert.False(src.Paused);
        o = MigrationHarness.Run(src, a => new DestinationOptions(a, PagingMode.Exits, Backing.Anonymous) { Mixed = new MixedWorkload(2) { Protocol = AsyncPfProtocol.Arm } });
        Assert.Contains("this destination expects the mixed workload with 2 memory task(s) per vCPU (arm async PF)", o.DestinationError!.Message);
        Assert.False(src.Paused);
    }
}
