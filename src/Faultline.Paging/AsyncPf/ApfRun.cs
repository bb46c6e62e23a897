using System.Diagnostics;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Paging.AsyncPf;

/// <summary>How a guest learns of a page still on its way: not at all (the vCPU waits), x86's async-PF protocol, or arm64's.</summary>
public enum NotifyProtocol { Sync, X86, Arm }

/// <summary>One run of the mixed workload (<see cref="TaskKernel"/>): per vCPU one CPU task and N memory tasks over pages that arrive after a fixed latency.</summary>
public sealed record ApfRunSpec(int Vcpus, int MemoryTasks, TimeSpan Latency, NotifyProtocol Protocol, AsyncPfMode Policy, int PagesPerVcpu, ulong CpuIterations)
{
    public PagingMode Engine { get; init; } = PagingMode.Exits;
    public ulong Seed { get; init; } = 0x5eed;
    /// <summary>Memory tasks run with interrupts off (the host must then resolve their faults synchronously).</summary>
    public bool MemoryTasksInterruptsOff { get; init; }
    /// <summary>Outstanding async faults per vCPU.</summary>
    public int Limit { get; init; } = 64;
    /// <summary>Burst mode: one memory task that touches all its pages before waiting for any (<see cref="TaskConfig.Burst"/>).</summary>
    public bool Burst { get; init; }
    /// <summary>The ready poll (<see cref="AsyncPfOptions.ReadyPoll"/>).</summary>
    public TimeSpan ReadyPoll { get; init; } = new AsyncPfOptions().ReadyPoll;
    /// <summary>If set: this long after the first page is asked for, a second path (as a migration's push) installs every page, in order.</summary>
    public TimeSpan? PushAfter { get; init; }
    /// <summary>Whether the guest enables async PF under the x86 protocol (false: the host offers it, the guest never asks).</summary>
    public bool GuestEnables { get; init; } = true;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>The delayed source's delivery thread under SCHED_FIFO (<see cref="DelayedPageSource"/>): on time at 1 ms and more; at 30 µs most rows within 0.4 ms, a few pages 7–37 ms late (docs/async-pf.md).</summary>
    public bool RealTimeDelivery { get; init; }
}

/// <summary>What one mixed run measured. Times are host times; guest TSCs are mapped onto the host clock (see <see cref="ApfRun"/>).</summary>
public sealed record ApfRunResult(ApfRunSpec Spec, TimeSpan Elapsed, IReadOnlyList<TimeSpan> CpuTaskDone, IReadOnlyList<TimeSpan> MemoryTasksDone, long Mismatches,
    AsyncPfStats? Async, PagingStats Paging, IReadOnlyList<double> NotPresentUs, IReadOnlyList<double> ReadyUs, IReadOnlyList<double> NotifyUs, long GuestNotPresent, long GuestReady, long GuestSpurious,
    IReadOnlyList<AsyncPfRecord> History, IReadOnlyList<TaskVcpuResult> Guest)
{
    /// <summary>KVM_RUN returns of every vCPU (boot and done() included).</summary>
    public long Exits { get; init; }
    /// <summary>The latest a page was installed past its due time, and whether the delivery thread ran under SCHED_FIFO.</summary>
    public TimeSpan DeliveryLateMax { get; init; }
    public bool DeliveryRealTime { get; init; }
    /// <summary>Garbage collections in this process while the guest ran, and their total pause (every managed thread stopped).</summary>
    public int GcCollections { get; init; }
    public TimeSpan GcPause { get; init; }
    /// <summary>arm: each vCPU's SDEI handler entries, COMPLETEs, COMPLETE_AND_RESUMEs and conduit calls.</summary>
    public IReadOnlyList<(long Dispatched, long Completed, long Resumed, long Calls)> Sdei { get; init; } = [];
    /// <summary>arm: each vCPU's async-PF state as the VMM's control path reads it after the run.</summary>
    public IReadOnlyList<Arm.ArmAsyncPfState> ArmState { get; init; } = [];
}

/// <summary>
/// Runs the mixed workload once on a real VM: the task kernel on every vCPU, guest RAM behind an exit-based engine,
/// every page from a <see cref="DelayedPageSource"/>. The guest checks every page it reads (mismatches must stay 0).
/// Notification costs join the host's record of each async fault (exit, page present) with the guest's log (handler
/// entry, woken task running) by token; guest TSCs are mapped to host time by two pairs (the boot report, the last
/// done()), each taken at an exit a few µs after its rdtsc, so the costs read that much high at most.
/// </summary>
public static class ApfRun
{
    public static ApfRunResult Execute(ApfRunSpec spec)
    {
        var arm = spec.Protocol == NotifyProtocol.Arm;
        var asyncOptions = new AsyncPfOptions(spec.Protocol == NotifyProtocol.Sync ? AsyncPfMode.Never : spec.Policy)
        {
            Limit = spec.Limit, ReadyPoll = spec.ReadyPoll, Protocol = arm ? AsyncPfProtocol.Arm : AsyncPfProtocol.X86,
        };
        var kernel = arm ? new TaskKernel(asyncOptions.ArmReadyVector, TaskProtocol.Arm) : new TaskKernel();
        var ram = (ulong)spec.Vcpus * (ulong)spec.PagesPerVcpu * GuestAddress.PageSize;
        using var machine = GuestMachine.Create(new MachineConfig(spec.Vcpus, ram) { Kernel = kernel.Kernel });
        using var engine = (PagingEngine)EngineFactory.Create(new PagingOptions(spec.Engine, Backing.Anonymous) { AsyncPf = asyncOptions });
        using var source = new DelayedPageSource(new PatternPageSource(spec.Seed), spec.Latency, spec.RealTimeDelivery);
        engine.Start(machine, source);
        var program = new TaskProgram(machine, kernel, new TaskConfig(spec.MemoryTasks, spec.CpuIterations, AsyncPf: spec.Protocol != NotifyProtocol.Sync && spec.GuestEnables, spec.Seed)
        {
            MemoryTasksInterruptsOff = spec.MemoryTasksInterruptsOff, Burst = spec.Burst,
        });
        program.Boot();
        using var pushStop = new CancellationTokenSource();
        var pusher = spec.PushAfter is { } after ? StartPush(machine, engine, spec.Seed, after, pushStop.Token) : null;
        RunOutcome outcome;
        var gc0 = GC.CollectionCount(0);
        var pause0 = GC.GetTotalPauseDuration();
        try { outcome = machine.RunBooted(engine, spec.Timeout).ThrowIfFailed(); }
        finally { pushStop.Cancel(); pusher?.Join(); }
        var gcs = GC.CollectionCount(0) - gc0;   // a gen1 or gen2 collection counts in gen0 as well
        var gcPause = GC.GetTotalPauseDuration() - pause0;
        var guest = program.Read();

        var cpuDone = new List<TimeSpan>();
        var memDone = new List<TimeSpan>();
        var clocks = new TscClock[spec.Vcpus];
        for (var v = 0; v < spec.Vcpus; v++)
        {
            var o = outcome.Vcpus[v];
            var g = guest[v];
            var lastDone = g.Tasks.Max(t => t.DoneTsc);
            clocks[v] = new TscClock(g.StartTsc, o.ReportTimestamps[0], lastDone, o.DoneTimestamp);
            foreach (var t in g.Tasks)
            {
                var at = clocks[v].Since(t.DoneTsc, g.StartTsc);
                if (t.Kind == "cpu") cpuDone.Add(at); else memDone.Add(at);
            }
        }

        var history = engine.AsyncPf?.History() ?? [];
        var notPresent = new List<double>();
        var ready = new List<double>();
        var both = new List<double>();
        var logs = guest.Select(g => g.Log.GroupBy(e => (e.Token, e.Kind)).ToDictionary(x => x.Key, x => x.First().Tsc)).ToArray();
        foreach (var r in history)
        {
            var clock = clocks[r.Vcpu];
            var a = r.Accepted != 0 && logs[r.Vcpu].TryGetValue((r.Token, TaskLayout.LogNotPresent), out var np) ? clock.Micros(np, r.Accepted) : double.NaN;
            var b = r.Present != 0 && logs[r.Vcpu].TryGetValue((r.Token, TaskLayout.LogTaskRunning), out var run) ? clock.Micros(run, r.Present) : double.NaN;
            if (!double.IsNaN(a)) notPresent.Add(a);
            if (!double.IsNaN(b)) ready.Add(b);
            if (!double.IsNaN(a) && !double.IsNaN(b)) both.Add(a + b);   // one fault's two notifications
        }
        var armHost = engine.AsyncPf as Arm.ArmAsyncPf;
        return new ApfRunResult(spec, outcome.Elapsed, cpuDone, memDone, guest.Sum(g => g.Mismatches), engine.AsyncPf?.Snapshot(), engine.Snapshot(),
            notPresent, ready, both, guest.Sum(g => g.NotPresent), guest.Sum(g => g.Ready), guest.Sum(g => g.Spurious), history, guest)
        {
            Exits = outcome.Vcpus.Sum(v => v.Exits), DeliveryLateMax = source.LatestDelivery, DeliveryRealTime = source.DeliversInRealTime,
            GcCollections = gcs, GcPause = gcPause,
            Sdei = armHost is null ? [] : Enumerable.Range(0, spec.Vcpus).Select(armHost.Sdei.CountsOf).ToList(),
            ArmState = armHost is null ? [] : Enumerable.Range(0, spec.Vcpus).Select(armHost.CaptureVcpu).ToList(),
        };
    }

    /// <summary>A second installer, as a migration's background push: every page in address order, through the engine's sink.</summary>
    private static Thread StartPush(GuestMachine m, PagingEngine engine, ulong seed, TimeSpan after, CancellationToken stop)
    {
        var t = new Thread(() =>
        {
            while (engine.Tracker.StateOf(0) == PageTracker.Missing) if (stop.WaitHandle.WaitOne(1)) return;
            if (stop.WaitHandle.WaitOne(after)) return;
            var buf = new byte[GuestAddress.PageSize];
            for (ulong off = 0; off < m.Ram.Size && !stop.IsCancellationRequested; off += GuestAddress.PageSize)
            {
                var page = m.Ram.Base + off;
                PatternPageSource.Fill(page, seed, buf);
                engine.Sink.Install(page, buf);
            }
        }) { Name = "fl-push", IsBackground = true };
        t.Start();
        return t;
    }

    /// <summary>Guest TSC → host Stopwatch time, from two (TSC, host timestamp) pairs on one vCPU.</summary>
    private readonly record struct TscClock(ulong Tsc0, long Host0, ulong Tsc1, long Host1)
    {
        private double TicksPerTsc => Tsc1 > Tsc0 ? (double)(Host1 - Host0) / (Tsc1 - Tsc0) : 0;
        public long HostOf(ulong tsc) => Host0 + (long)(((double)tsc - Tsc0) * TicksPerTsc);
        public TimeSpan Since(ulong tsc, ulong from) => TimeSpan.FromSeconds(((double)tsc - from) * TicksPerTsc / Stopwatch.Frequency);
        public double Micros(ulong tsc, long hostFrom) => (HostOf(tsc) - hostFrom) * 1e6 / Stopwatch.Frequency;
    }
}
