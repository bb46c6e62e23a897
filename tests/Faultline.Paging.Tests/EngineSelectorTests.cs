using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Bench;
using Faultline.Paging.Engines;
using Faultline.Paging.Selection;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Paging.Tests;

public sealed class EngineSelectorTests
{
    [KvmFact]
    public void On_this_host_auto_picks_exits_for_both_backings_and_every_engine_it_calls_supported_runs()
    {
        var caps = HostCapabilities.Detect();
        foreach (var backing in new[] { Backing.Anonymous, Backing.Shmem })
        {
            var choice = EngineSelector.Evaluate(caps, backing);
            Assert.Equal(PagingMode.Exits, choice.Chosen);   // kvm_pvm: SIGBUS userfaultfd, no native KVM Userfault
            Assert.Contains("SIGBUS", choice.Reason);
            foreach (var c in choice.Candidates.Where(c => c.Supported))
            {
                var r = PagingRun.Execute(new PagingRunSpec(new PagingOptions(c.Mode, backing, Readers: 1), 1, 256 * KiB)
                {
                    Workload = Workload.Verify, QwordsPerPage = 8,
                });
                Assert.Equal(0UL, r.GuestResult);
                Assert.Equal(0, r.HostMismatches);
            }
            foreach (var c in choice.Candidates.Where(c => !c.Supported))
                Assert.Throws<HostSupportException>(() => EngineSelector.Check(c.Mode, caps, backing));
        }
    }

    [Fact]
    public void Without_sigbus_or_thread_id_the_reader_engines_are_picked_and_exits_is_refused_with_its_reason()
    {
        var caps = new HostCapabilities(UffdFeatures.MinorShmem | UffdFeatures.Move, NativeUserfault: false);
        Assert.Equal(PagingMode.Missing, EngineSelector.Evaluate(caps, Backing.Anonymous).Chosen);
        Assert.Equal(PagingMode.Minor, EngineSelector.Evaluate(caps, Backing.Shmem).Chosen);
        var e = Assert.Throws<HostSupportException>(() => EngineSelector.Check(PagingMode.Exits, caps, Backing.Anonymous));
        Assert.Contains("neither SIGBUS nor THREAD_ID", e.Message);
    }

    [Fact]
    public void Native_userfault_makes_the_bitmap_engines_runnable_without_uffd_features()
    {
        var caps = new HostCapabilities(UffdFeatures.None, NativeUserfault: true);
        var choice = EngineSelector.Evaluate(caps, Backing.Anonymous);
        Assert.Equal(PagingMode.Exits, choice.Chosen);
        Assert.Contains("native", choice.Reason);
        Assert.True(choice.Candidates.Single(c => c.Mode == PagingMode.Bitmap).Supported);
        var none = Assert.Throws<HostSupportException>(() => EngineSelector.Evaluate(caps, Backing.Shmem));
        Assert.Contains("UFFD_FEATURE_MINOR_SHMEM", none.Message);
    }
}
