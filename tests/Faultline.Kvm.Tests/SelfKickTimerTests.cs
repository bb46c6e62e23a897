using System.Collections.Concurrent;
using Faultline.Guest;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// SelfKickTimer: a POSIX timer (SIGEV_THREAD_ID, the kick signal) that the vCPU thread arms for itself. Armed, it
/// brings a spinning CPL3 vCPU out of KVM_RUN with no kick from anywhere; disarmed or never armed, it does not; its
/// signal and a kick pending together are both drained; and timer_delete leaves no timer behind (/proc/self/timers).
/// </summary>
[Collection(nameof(ProcessWide))]
public sealed class SelfKickTimerTests
{
    private static readonly TimeSpan Period = TimeSpan.FromMilliseconds(1);
    private static readonly TimeSpan ExitBound = TimeSpan.FromSeconds(5);   // generous: only a hang fails

    private readonly record struct Observed(VcpuExitKind Kind, long Kicks, long SelfKicks, ulong Rbx);

    /// <summary>
    /// A spinning CPL3 vCPU on its own thread; <paramref name="body"/> runs on that thread after binding and reports each
    /// exit. The test thread reads the exits; if the vCPU hangs, it is kicked loose (then the machine is disposed safely).
    /// </summary>
    private sealed class SpinningVcpu : IDisposable
    {
        private readonly GuestMachine _m;
        private readonly Thread _thread;
        private int _stop;

        public BlockingCollection<Observed> Exits { get; } = new();
        public ManualResetEventSlim Bound { get; } = new();
        public Exception? Error { get; private set; }
        public Vcpu Vcpu => _m.Vcpus[0];

        public SpinningVcpu(Action<Vcpu, Func<Observed>> body)
        {
            _m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
            var vcpu = _m.Vcpus[0];
            _m.Image.Boot(vcpu, Workload.Spin, _m.ArgsFor(0), PrivilegeLevel.User);
            _thread = new Thread(() =>
            {
                try
                {
                    vcpu.BindToCurrentThread();
                    Bound.Set();
                    body(vcpu, () =>
                    {
                        if (Volatile.Read(ref _stop) != 0) throw new OperationCanceledException();
                        var exit = vcpu.Run();
                        var o = new Observed(exit.Kind, vcpu.KicksDelivered, vcpu.SelfKicksDelivered, vcpu.SyncedRegs.Rbx);
                        Exits.Add(o);
                        return o;
                    });
                }
                catch (OperationCanceledException) { }
                catch (Exception e) { Error = e; }
                finally
                {
                    vcpu.UnbindThread();
                    Exits.CompleteAdding();
                }
            }) { Name = "fl-vcpu0", IsBackground = true };
            _thread.Start();
            Assert.True(Bound.Wait(ExitBound), "vCPU thread did not start");
        }

        public Observed Next(string what)
        {
            if (!Exits.TryTake(out var o, ExitBound)) Assert.Fail($"{what}: KVM_RUN did not return within {ExitBound.TotalSeconds} s");
            return o;
        }

        public void Dispose()
        {
            Volatile.Write(ref _stop, 1);
            var ended = false;
            for (var i = 0; i < 1000 && !(ended = _thread.Join(10)); i++) Vcpu.Kick();
            // unmapping kvm_run under a thread still in Vcpu.Run would crash the test host: leak the machine instead
            if (ended) _m.Dispose();
            Exits.Dispose();
            Bound.Dispose();
        }
    }

    [KvmFact]
    public void An_armed_self_kick_timer_interrupts_a_spinning_cpl3_vcpu_with_no_kick_from_anywhere()
    {
        const int Exits = 10;
        using var vm = new SpinningVcpu((vcpu, run) =>
        {
            using var timer = SelfKickTimer.CreateForCurrentThread(vcpu);
            timer.Arm(Period);
            Assert.True(timer.IsArmed);
            Assert.Equal(Period, timer.Period);
            for (var i = 0; i < Exits; i++) if (run().Kind != VcpuExitKind.Interrupted) return;
        });
        var seen = new List<Observed>();
        for (var i = 0; i < Exits; i++) seen.Add(vm.Next($"exit {i}"));   // nobody kicks: only the timer can end these runs

        Assert.Null(vm.Error);
        Assert.All(seen, o => Assert.Equal(VcpuExitKind.Interrupted, o.Kind));
        Assert.All(seen, o => Assert.Equal(0, o.Kicks));
        for (var i = 0; i < seen.Count; i++) Assert.True(seen[i].SelfKicks >= i + 1, $"exit {i}: {seen[i].SelfKicks} timer signals drained");
        // the guest ran meanwhile (its first entries may spend a whole period in KVM building the shadow page tables)
        for (var i = 1; i < seen.Count; i++) Assert.True(seen[i].Rbx >= seen[i - 1].Rbx, $"RBX went back at exit {i}: {string.Join("; ", seen)}");
        Assert.True(seen[^1].Rbx > seen[0].Rbx, $"the guest did not run between the timer's exits: {string.Join("; ", seen)}");
    }

    [KvmFact]
    public void A_disarmed_or_never_armed_self_kick_timer_leaves_the_vcpu_in_the_guest_until_it_is_kicked()
    {
        using var running = new SemaphoreSlim(0);
        using var vm = new SpinningVcpu((vcpu, run) =>
        {
            using var timer = SelfKickTimer.CreateForCurrentThread(vcpu);   // created, never armed
            running.Release();
            run();
            timer.Arm(TimeSpan.FromSeconds(10));                              // armed far in the future, then disarmed
            timer.Disarm();
            Assert.False(timer.IsArmed);
            running.Release();
            run();
        });
        var exits = new List<Observed>();
        for (var i = 0; i < 2; i++)
        {
            Assert.True(running.Wait(ExitBound), $"run {i} did not start");
            // 50 periods of an armed timer: none of them may end this run, only the kick below
            Assert.False(vm.Exits.TryTake(out var early, TimeSpan.FromMilliseconds(50)), $"run {i} ended without a kick: {early}");
            Assert.True(vm.Vcpu.TryKick());
            exits.Add(vm.Next($"run {i}"));
        }

        Assert.Null(vm.Error);
        Assert.All(exits, o => Assert.Equal(VcpuExitKind.Interrupted, o.Kind));
        Assert.Equal([1L, 2L], exits.Select(o => o.Kicks));
        Assert.All(exits, o => Assert.Equal(0, o.SelfKicks));
        Assert.True(exits[1].Rbx > exits[0].Rbx, "the guest did not run in the second run");
    }

    [KvmFact]
    public void A_kick_and_a_timer_expiry_pending_together_end_one_run_and_the_expiries_queue_one_signal()
    {
        // on this (test) thread: no other thread runs the vCPU, so every step is in order
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        m.Image.Boot(vcpu, Workload.Spin, m.ArgsFor(0), PrivilegeLevel.User);
        vcpu.BindToCurrentThread();
        try
        {
            using var timer = SelfKickTimer.CreateForCurrentThread(vcpu);
            // a kick, then ~12 expiries while this thread is outside KVM_RUN: the timer's signal is queued beside the kick's
            // (a POSIX timer has its own queue entry), once however often it expires
            Assert.True(vcpu.TryKick());
            timer.Arm(TimeSpan.FromMilliseconds(5));
            Thread.Sleep(60);
            Assert.Equal(VcpuExitKind.Interrupted, vcpu.Run().Kind);   // ends at once, both drained
            Assert.Equal(1, vcpu.KicksDelivered);
            // a second timer signal only if the timer, re-armed by the dequeue, expired again within the drain's microseconds
            Assert.InRange(vcpu.SelfKicksDelivered, 1, 2);
            var drained = vcpu.SelfKicksDelivered;

            // the other order: the timer's signal is pending first, and a kick (a standard signal, pending at most once per
            // thread) merges into it: one Interrupted exit answers both, and the kick is not lost
            Thread.Sleep(60);                  // dequeuing re-armed the periodic timer: it expired again meanwhile
            Assert.True(vcpu.TryKick());
            Assert.Equal(VcpuExitKind.Interrupted, vcpu.Run().Kind);
            Assert.Equal(1, vcpu.KicksDelivered);
            Assert.InRange(vcpu.SelfKicksDelivered, drained + 1, drained + 2);
            drained = vcpu.SelfKicksDelivered;

            timer.Disarm();
            Assert.True(vcpu.TryKick());
            Assert.Equal(VcpuExitKind.Interrupted, vcpu.Run().Kind);   // the kick alone: nothing of the timer is left pending
            Assert.Equal(2, vcpu.KicksDelivered);
            Assert.Equal(drained, vcpu.SelfKicksDelivered);
        }
        finally
        {
            vcpu.UnbindThread();
        }
    }

    [KvmFact]
    public void A_self_kick_timer_belongs_to_the_vcpu_thread_and_timer_delete_leaves_no_timer_behind()
    {
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        Assert.Throws<InvalidOperationException>(() => SelfKickTimer.CreateForCurrentThread(vcpu));   // no thread bound yet

        var before = ProcessResources.CountPosixTimers();
        vcpu.BindToCurrentThread();
        try
        {
            var timers = new List<SelfKickTimer>();
            for (var i = 0; i < 100; i++)
            {
                var t = SelfKickTimer.CreateForCurrentThread(vcpu);
                timers.Add(t);
                if (i % 2 == 0) t.Arm(TimeSpan.FromSeconds(10));   // half are deleted while armed
            }
            Assert.Equal(before + 100, ProcessResources.CountPosixTimers());

            // armed only by its own thread (its hrtimer must live on that thread's CPU)
            Exception? foreign = null;
            var other = new Thread(() => { try { timers[1].Arm(Period); } catch (Exception e) { foreign = e; } });
            other.Start();
            other.Join();
            Assert.IsType<InvalidOperationException>(foreign);
            Assert.False(timers[1].IsArmed);

            foreach (var t in timers) t.Dispose();
            Assert.Equal(before, ProcessResources.CountPosixTimers());
            Assert.Throws<ObjectDisposedException>(() => timers[0].Arm(Period));
            timers[0].Dispose();   // a second Dispose is a no-op
        }
        finally
        {
            vcpu.UnbindThread();
        }
        Assert.Equal(before, ProcessResources.CountPosixTimers());
    }
}
