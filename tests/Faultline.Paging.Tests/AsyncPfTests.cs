using Faultline.Guest.Tasks;
using Faultline.Paging.AsyncPf;
using Faultline.TestKit;

namespace Faultline.Paging.Tests;

/// <summary>
/// Async page faults end to end on a real VM: the task kernel's memory tasks touch pages that arrive 2 ms after they
/// are asked for; with the x86 protocol (and, where the test is a theory, arm's: docs/async-pf-arm.md) every fault becomes "not present (T)" then "page ready (T)", the CPU task runs
/// meanwhile, and no task reads a page before its "ready" (the guest's check count stays 0).
/// </summary>
public sealed class AsyncPfTests
{
    private static ApfRunSpec Spec(NotifyProtocol p, AsyncPfMode mode = AsyncPfMode.Always, int vcpus = 1, int memTasks = 1, int pages = 32, double latencyUs = 2000, ulong cpuIterations = 200_000_000) =>
        new(vcpus, memTasks, TimeSpan.FromMicroseconds(latencyUs), p, mode, pages, CpuIterations: cpuIterations);

    [KvmTheory]
    [InlineData(NotifyProtocol.X86)]
    [InlineData(NotifyProtocol.Arm)]
    public void Every_fault_is_not_present_then_ready_with_the_same_token_in_order(NotifyProtocol protocol)
    {
        var r = ApfRun.Execute(Spec(protocol));
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(32, r.Async!.NotPresent);
        Assert.Equal(32, r.Async.ReadyDelivered);
        Assert.Equal(32, r.GuestNotPresent);
        Assert.Equal(32, r.GuestReady);
        Assert.Equal(0, r.GuestSpurious);
        var log = r.Guest[0].Log.ToList();
        // per token: "not present" logged before the task runs again, and tokens come back in the order they went out
        var np = log.Where(e => e.Kind == TaskLayout.LogNotPresent).Select(e => e.Token).ToList();
        var run = log.Where(e => e.Kind == TaskLayout.LogTaskRunning).Select(e => e.Token).ToList();
        Assert.Equal(np, run);
        Assert.Equal(np.Distinct().Count(), np.Count);
        Assert.All(np, t => Assert.Equal(0u, t & 0xFFF));   // vCPU 0's tokens: (counter << 12) | 0
        foreach (var t in np) Assert.True(log.FindIndex(e => e.Token == t && e.Kind == TaskLayout.LogNotPresent) < log.FindIndex(e => e.Token == t && e.Kind == TaskLayout.LogTaskRunning));
        Assert.Equal(r.History.Select(h => h.Token), np);
    }

    [KvmTheory]
    [InlineData(NotifyProtocol.X86)]
    [InlineData(NotifyProtocol.Arm)]
    public void The_cpu_task_runs_while_pages_travel(NotifyProtocol protocol)
    {
        // a CPU task several times longer than the pages' travel (32 × 2 ms), so it still runs when the last one comes back
        var sync = ApfRun.Execute(Spec(NotifyProtocol.Sync, cpuIterations: 600_000_000));
        var x86 = ApfRun.Execute(Spec(protocol, cpuIterations: 600_000_000));
        Assert.Equal(0, sync.Mismatches + x86.Mismatches);
        Assert.Equal(0, sync.GuestNotPresent);
        // sync: the CPU task starts after the memory task (which waits 32 × 2 ms); async: it finishes first, in parallel
        Assert.True(sync.CpuTaskDone[0] > sync.MemoryTasksDone[0]);
        // async: pages come back while the CPU task still runs (it was scheduled into the waits). Counted on the guest's own
        // clock (the "ready" entries of its log against the CPU task's end), so a loaded host slowing either task does not
        // change what is asserted; sync has no such entries at all.
        var cpuEnd = x86.Guest[0].Tasks.Single(t => t.Kind == "cpu").DoneTsc;
        var readyWhileCpuRan = x86.Guest[0].Log.Count(e => e.Kind == TaskLayout.LogTaskRunning && e.Tsc < cpuEnd);
        Assert.True(readyWhileCpuRan >= 16, $"{readyWhileCpuRan} of 32 pages came back while the CPU task ran (cpu {x86.CpuTaskDone[0]} mem {x86.MemoryTasksDone[0]})");
    }

    [KvmFact]
    public void Four_memory_tasks_overlap_their_fetches()
    {
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, memTasks: 4, pages: 64));
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(64, r.Async!.NotPresent);
        Assert.True(r.History.Count == 64);
        // at some moment more than one fault was outstanding: a fault was accepted before an earlier one's page came
        var ordered = r.History.OrderBy(h => h.Accepted).ToList();
        Assert.Contains(ordered.Zip(ordered.Skip(1)), p => p.Second.Accepted < p.First.Present);
    }

    [KvmTheory]
    [InlineData(NotifyProtocol.X86)]
    [InlineData(NotifyProtocol.Arm)]
    public void A_guest_that_never_enables_it_gets_synchronous_faults(NotifyProtocol protocol)
    {
        var r = ApfRun.Execute(Spec(protocol) with { GuestEnables = false });
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(0, r.Async!.NotPresent);
        Assert.Equal(32, r.Async.SyncNotEnabled);
    }

    [KvmTheory]
    [InlineData(NotifyProtocol.X86)]
    [InlineData(NotifyProtocol.Arm)]
    public void Tasks_with_interrupts_off_get_synchronous_faults(NotifyProtocol protocol)
    {
        var r = ApfRun.Execute(Spec(protocol) with { MemoryTasksInterruptsOff = true });
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(0, r.Async!.NotPresent);
        Assert.Equal(32, r.Async.SyncInterruptsOff);
    }

    [KvmFact]
    public void At_the_outstanding_limit_faults_are_synchronous()
    {
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, memTasks: 4, pages: 64) with { Limit = 1 });
        Assert.Equal(0, r.Mismatches);
        Assert.True(r.Async!.SyncLimit > 0, "no fault met the limit of 1");
        Assert.Equal(64, r.Async.NotPresent + r.Async.SyncLimit);
        Assert.Equal(r.Async.NotPresent, r.GuestReady);
    }

    [KvmTheory]
    [InlineData(30, false)]
    [InlineData(10_000, true)]
    public void Auto_is_async_only_where_the_wait_exceeds_the_notification_cost(double latencyUs, bool async)
    {
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, AsyncPfMode.Auto, pages: 24, latencyUs: latencyUs));
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(async ? 24 : 0, r.Async!.NotPresent);
        Assert.Equal(async ? 0 : 24, r.Async.SyncPolicy);
    }

    [KvmFact]
    public void A_page_installed_by_the_push_still_gets_its_ready_once()
    {
        // pages take 50 ms on demand; 30 ms in, a second path installs every page: outstanding faults hear of it from the push
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, pages: 32, latencyUs: 50_000) with { PushAfter = TimeSpan.FromMilliseconds(30) });
        Assert.Equal(0, r.Mismatches);
        Assert.True(r.Async!.NotPresent >= 1, $"{r.Async} {r.Paging}");
        Assert.Equal(r.Async.NotPresent, r.GuestReady);
        Assert.Equal(r.Async.NotPresent, r.Async.ReadyDelivered);
        Assert.Equal(0, r.GuestSpurious);
        Assert.True(r.Elapsed < TimeSpan.FromMilliseconds(32 * 50), $"the push did not shorten the run: {r.Elapsed}");
    }

    [KvmFact]
    public void Sixty_four_faults_outstanding_on_one_vcpu_then_the_limit()
    {
        // a guest that does not wait: 70 pages touched in a row, each 100 ms away; 64 become async, the rest meet the
        // limit and are resolved synchronously; the check pass then faults again on pages still in flight (no second fetch)
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, pages: 70, latencyUs: 100_000) with { Burst = true });
        Assert.Equal(0, r.Mismatches);
        Assert.True(r.Async!.SyncLimit >= 1, $"{r.Async}");
        Assert.True(r.Async.NotPresent >= 64, $"{r.Async}");
        var ordered = r.History.OrderBy(h => h.Accepted).ToList();
        var maxOutstanding = ordered.Select(h => ordered.Count(o => o.Accepted <= h.Accepted && o.Acked > h.Accepted)).Max();
        Assert.Equal(64, maxOutstanding);
        Assert.Equal(70, r.Paging.Installed);                          // every page fetched and installed once
        Assert.Equal(r.Async.NotPresent, r.GuestReady);
        Assert.Equal(r.History.Select(h => h.Token).Distinct().Count(), r.History.Count);
    }

    [KvmFact]
    public void With_the_ready_poll_every_ready_still_arrives_once()
    {
        var r = ApfRun.Execute(Spec(NotifyProtocol.X86, memTasks: 4, pages: 48) with { ReadyPoll = TimeSpan.FromMicroseconds(300) });
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(48, r.Async!.NotPresent);
        Assert.Equal(48, r.GuestReady);
        Assert.Equal(0, r.GuestSpurious);
    }
}
