using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Tests;

/// <summary>The tracker's states under races, and its waiters (the fault path waits here, not on the source).</summary>
public sealed class PageTrackerTests
{
    [Fact]
    public void An_installer_claims_every_page_even_while_fault_paths_mark_them_requested_at_the_same_time()
    {
        const ulong Pages = 64;
        for (var round = 0; round < 5000; round++)
        {
            using var t = new PageTracker(new GuestAddress(0x100000), Pages * 4096);
            using var go = new Barrier(2);
            var requested = 0L;
            var faultPaths = new Thread(() => { go.SignalAndWait(); for (ulong i = 0; i < Pages; i++) if (t.TryRequest(i)) requested++; });
            var claimed = 0L;
            var installer = new Thread(() => { go.SignalAndWait(); for (ulong i = 0; i < Pages; i++) if (t.TryClaim(i)) claimed++; });
            faultPaths.Start(); installer.Start();
            faultPaths.Join(); installer.Join();
            Assert.Equal((long)Pages, claimed);   // a request racing the claim never makes the installer skip a page
            for (ulong i = 0; i < Pages; i++) Assert.Equal(PageTracker.Installing, t.StateOf(i));
        }
    }

    [Fact]
    public void A_waiter_wakes_when_its_page_is_published_asks_again_when_a_claim_is_given_back_and_returns_false_on_failure()
    {
        using var t = new PageTracker(new GuestAddress(0), 8 * 4096);
        Assert.True(t.TryRequest(3));
        var asked = new List<ulong>();
        var rerequest = new Recorder(asked);
        var woke = false;
        var waiter = new Thread(() => woke = t.WaitPresent(3, spinTicks: 0, TimeSpan.FromSeconds(10), rerequest));
        waiter.Start();
        Assert.True(t.TryClaim(3));
        t.Abandon(3);                                   // the install failed: the page is missing again ...
        Assert.True(SpinWait.SpinUntil(() => { lock (asked) return asked.Count == 1; }, TimeSpan.FromSeconds(10)), "the waiter did not ask again");
        Assert.Equal(PageTracker.Requested, t.StateOf(3)); // ... and the waiter asked for it once more
        Assert.True(t.TryClaim(3));
        t.Publish(3);
        Assert.True(waiter.Join(TimeSpan.FromSeconds(10)));
        Assert.True(woke);
        Assert.Equal(0, t.WaitsEndedByTimer);          // woken by the publish, not found by the timer

        Assert.True(t.TryRequest(5));
        var failed = true;
        var second = new Thread(() => failed = !t.WaitPresent(5, 0, TimeSpan.FromSeconds(10), null));
        second.Start();
        t.Fail(new PageUnavailableException("source gone"));
        Assert.True(second.Join(TimeSpan.FromSeconds(10)));
        Assert.True(failed);
        Assert.Equal("source gone", t.Failure!.Message);
    }

    [Fact]
    public void A_page_made_present_without_a_wake_up_is_found_by_the_waiters_timer_and_counted_as_such()
    {
        using var t = new PageTracker(new GuestAddress(0), 8 * 4096);
        Assert.True(t.TryRequest(2));
        var found = false;
        var waiter = new Thread(() => found = t.WaitPresent(2, spinTicks: 0, TimeSpan.FromSeconds(10), null));
        waiter.Start();
        // blocked on its slot (past the spin) before the page appears
        Assert.True(SpinWait.SpinUntil(() => (waiter.ThreadState & ThreadState.WaitSleepJoin) != 0, TimeSpan.FromSeconds(10)), "the waiter never blocked");
        t.MarkAllPresent();                             // present, but nobody is woken: what a lost wake-up looks like
        Assert.True(waiter.Join(TimeSpan.FromSeconds(10)));
        Assert.True(found);
        Assert.True(t.WaitTimerExpiries >= 1);
        Assert.Equal(1, t.WaitsEndedByTimer);
    }

    private sealed class Recorder(List<ulong> asked) : IRerequest
    {
        public void Request(ulong index) { lock (asked) asked.Add(index); }
    }
}
