using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;
using static Faultline.TestKit.Units;
using Faultline.Paging.Engines.Bitmap;

namespace Faultline.Paging.Tests;

public sealed class UserfaultBitmapTests
{
    private const ulong Seed = 0xABC0_0000;

    private static (GuestMachine M, BitmapEngine E) Start(Backing backing, int vcpus = 2, ulong perVcpu = 256 * KiB)
    {
        var m = GuestMachine.Create(new MachineConfig(vcpus, perVcpu * (ulong)vcpus, backing));
        var e = (BitmapEngine)EngineFactory.Create(new PagingOptions(PagingMode.Bitmap, backing));
        e.Start(m, new PatternPageSource(Seed));
        return (m, e);
    }

    private static RunOutcome Verify(GuestMachine m, BitmapEngine e) =>
        m.Run(Workload.Verify, i => m.ArgsFor(i, Seed, qwordsPerPage: 512), PrivilegeLevel.User, e).ThrowIfFailed();

    [KvmTheory]
    [InlineData(Backing.Anonymous)]
    [InlineData(Backing.Shmem)]
    public void A_page_marked_after_it_was_populated_exits_again_and_keeps_its_bytes(Backing backing)
    {
        var (m, e) = Start(backing);
        using (m) using (e)
        {
            Verify(m, e);
            var first = e.Snapshot();
            Assert.Equal((long)e.Tracker.Pages, first.UserfaultExits);     // everything starts marked
            Assert.Equal(0, e.UserfaultBits!.CountMarked());

            var marked = new[] { m.Ram.Base + 0, m.Ram.Base + 5 * 4096, m.RangeOf(1).Start + 7 * 4096 };
            foreach (var p in marked) e.MarkUserfault(p);
            Assert.All(marked, p => Assert.True(e.IsUserfault(p)));
            Assert.Equal(marked.Length, e.UserfaultBits!.CountMarked());

            var again = Verify(m, e);
            Assert.Equal(0UL, again.TotalResult);                           // contents survived the round trip
            var second = e.Snapshot();
            Assert.Equal(marked.Length, second.UserfaultExits - first.UserfaultExits);
            Assert.Equal(0, e.UserfaultBits!.CountMarked());
            Assert.True(e.Tracker.Complete);
        }
    }

    [KvmTheory]
    [InlineData(Backing.Anonymous)]
    [InlineData(Backing.Shmem)]
    public void A_cleared_page_does_not_exit(Backing backing)
    {
        var (m, e) = Start(backing);
        using (m) using (e)
        {
            Verify(m, e);
            var before = e.Snapshot();
            var a = m.Ram.Base + 3 * 4096;
            var b = m.Ram.Base + 9 * 4096;
            e.MarkUserfault(a);
            e.MarkUserfault(b);
            e.ClearUserfault(b);
            Assert.False(e.IsUserfault(b));
            Assert.Equal(0UL, Verify(m, e).TotalResult);
            var after = e.Snapshot();
            Assert.Equal(1, after.UserfaultExits - before.UserfaultExits);
            Assert.Equal(1, after.ExitFaults - before.ExitFaults);
        }
    }

    [KvmTheory]
    [InlineData(Backing.Anonymous)]
    [InlineData(Backing.Shmem)]
    public void Marking_and_clearing_race_free_with_running_vcpus(Backing backing)
    {
        var (m, e) = Start(backing, vcpus: 2, perVcpu: 512 * KiB);
        using (m) using (e)
        {
            var pages = e.Tracker.Pages;
            using var stop = new CancellationTokenSource();
            long marks = 0;
            var marker = new Thread(() =>
            {
                var rng = new Random(42);
                while (!stop.IsCancellationRequested)
                {
                    var p = m.Ram.Base + ((ulong)rng.NextInt64((long)pages) << 12);
                    if (rng.Next(3) == 0) e.ClearUserfault(p); else { e.MarkUserfault(p); Interlocked.Increment(ref marks); }
                }
            }) { Name = "fl-test-marker" };
            marker.Start();
            try
            {
                for (var pass = 0; pass < 15; pass++)
                {
                    // each pass writes a new generation and verifies it: a lost write or a stale page shows up as a mismatch
                    var gen = Seed + (ulong)pass * 0x100000;
                    m.Run(Workload.VerifyThenWrite, i => m.ArgsFor(i, pass == 0 ? Seed : gen - 0x100000, qwordsPerPage: 8, seed2: gen),
                        PrivilegeLevel.User, e).ThrowIfFailed();
                    var check = m.Run(Workload.Verify, i => m.ArgsFor(i, gen, qwordsPerPage: 8), PrivilegeLevel.User, e).ThrowIfFailed();
                    Assert.Equal(0UL, check.TotalResult);
                }
            }
            finally
            {
                stop.Cancel();
                marker.Join();
            }
            Assert.True(Interlocked.Read(ref marks) > 100, $"only {marks} marks raced the vCPUs");
            Assert.True(e.Snapshot().UserfaultExits > (long)pages, "marked pages did not exit");
        }
    }
}
