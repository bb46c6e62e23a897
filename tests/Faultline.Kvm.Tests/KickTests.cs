using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Faultline.Guest;
using Faultline.Kvm.Interop;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// Vcpu.Kick from another thread: a spinning CPL3 vCPU leaves KVM_RUN as Interrupted each time, and a kick sent while
/// the vCPU thread is outside KVM_RUN stays pending and ends the next KVM_RUN before the guest runs (HOST.md).
/// </summary>
public sealed class KickTests
{
    private const int Kicks = 20;
    private static readonly TimeSpan KickBound = TimeSpan.FromSeconds(2);   // generous: the median is ~40 µs, the tail a few ms

    private readonly record struct Observed(VcpuExitKind Kind, ulong SyncedRbx, ulong Rbx);

    /// <summary>Guest time of a thread (/proc/…/stat field 43, clock ticks): it grows only while that thread runs guest code.</summary>
    private static long GuestTicks(int tid)
    {
        var stat = File.ReadAllText($"/proc/self/task/{tid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');   // fields from 3 (state) on
        return long.Parse(fields[43 - 3]);
    }

    /// <summary>What a vCPU thread that ignores kicks is doing: state, signal masks and pending sets, kernel stack.</summary>
    private static string DescribeThread(int tid)
    {
        var task = $"/proc/self/task/{tid}";
        var status = File.ReadAllLines($"{task}/status").Where(l => l.StartsWith("State") || l.StartsWith("Sig") || l.StartsWith("ShdPnd"));
        var stack = File.Exists($"{task}/stack") ? File.ReadAllText($"{task}/stack").Replace('\n', ';') : "?";
        return $"thread {tid}: {string.Join(", ", status).Replace('\t', ' ')}; guest ticks {GuestTicks(tid)}; kick signal {Vcpu.KickSignal}; "
            + $"kernel stack {stack}; loadavg {File.ReadAllText("/proc/loadavg").Trim()}";
    }

    [KvmFact]
    public void Kicks_interrupt_a_spinning_vcpu_every_time_and_one_sent_outside_kvm_run_is_not_lost()
    {
        var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        m.Image.Boot(vcpu, Workload.Spin, m.ArgsFor(0), PrivilegeLevel.User);
        using var exits = new BlockingCollection<Observed>();
        using var bound = new ManualResetEventSlim();
        using var kickedOutside = new ManualResetEventSlim();
        Exception? error = null;
        var stop = 0;
        var thread = new Thread(() =>
        {
            try
            {
                vcpu.BindToCurrentThread();
                bound.Set();
                for (var i = 0; i <= Kicks && Volatile.Read(ref stop) == 0; i++)
                {
                    if (i == Kicks) kickedOutside.Wait();       // the last kick arrives while this thread is outside KVM_RUN
                    var exit = vcpu.Run();
                    exits.Add(new Observed(exit.Kind, vcpu.SyncedRegs.Rbx, vcpu.GetRegs().Rbx));
                    if (exit.Kind != VcpuExitKind.Interrupted) return;
                }
            }
            catch (Exception e)
            {
                error = e;
            }
            finally
            {
                vcpu.UnbindThread();
                exits.CompleteAdding();
            }
        }) { Name = "fl-vcpu0", IsBackground = true };
        thread.Start();

        var seen = new List<Observed>();
        var worst = TimeSpan.Zero;
        Observed last;
        var completed = false;
        try
        {
            Assert.True(bound.Wait(TimeSpan.FromSeconds(10)), "vCPU thread did not start");
            var tid = vcpu.ThreadId;
            for (var i = 0; i < Kicks; i++)
            {
                // kick only once the guest has run since the last exit (its thread gained guest time): then RBX must have grown
                var ticks = GuestTicks(tid);
                var wait = Stopwatch.StartNew();
                while (GuestTicks(tid) == ticks)
                {
                    Assert.True(wait.Elapsed < TimeSpan.FromSeconds(10), $"kick {i}: the guest did not run for 10 s");
                    Thread.Sleep(1);
                }
                var sw = Stopwatch.StartNew();
                Assert.True(vcpu.TryKick(), $"kick {i}: tgkill failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
                if (!exits.TryTake(out var o, KickBound))
                    Assert.Fail($"kick {i}: KVM_RUN did not return within {KickBound.TotalSeconds} s; {DescribeThread(tid)}");
                sw.Stop();
                if (sw.Elapsed > worst) worst = sw.Elapsed;
                Assert.Equal(VcpuExitKind.Interrupted, o.Kind);
                seen.Add(o);
            }

            Assert.True(vcpu.TryKick());   // the vCPU thread waits outside KVM_RUN: the kick stays pending
            kickedOutside.Set();
            Assert.True(exits.TryTake(out last, KickBound), "the pending kick was lost");
            completed = true;
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            kickedOutside.Set();
            var ended = false;
            for (var i = 0; i < 1000 && !(ended = thread.Join(10)); i++) vcpu.Kick();
            // unmapping kvm_run under a thread still in Vcpu.Run would crash the test host: leak the machine instead
            if (ended) m.Dispose();
            else if (completed) Assert.Fail("vCPU thread did not end: machine left undisposed");
        }
        Assert.Null(error);
        Assert.Equal(VcpuExitKind.Interrupted, last.Kind);
        Assert.Equal(seen[^1].Rbx, last.Rbx);                              // "at once": the guest did not run a single iteration
        Assert.All(seen, o => Assert.Equal(o.Rbx, o.SyncedRbx));          // sync regs arrive with EINTR exits too
        for (var i = 1; i < seen.Count; i++) Assert.True(seen[i].Rbx > seen[i - 1].Rbx, $"RBX did not grow between kicks {i - 1} and {i}");
        Assert.True(seen[0].Rbx > 0);
        Assert.Equal(Kicks + 1, vcpu.KicksDelivered);                      // each kick drained exactly once
        Assert.True(worst < KickBound);
    }

    [KvmFact]
    public void A_kick_before_the_vcpu_is_bound_is_a_no_op_and_unbinding_stops_further_kicks()
    {
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        Assert.Equal(0, vcpu.ThreadId);
        Assert.False(vcpu.TryKick());              // nobody to signal: must not signal some random thread
        m.Image.Boot(vcpu, Workload.TouchOnce, m.ArgsFor(0, seed: 1), PrivilegeLevel.User);
        vcpu.BindToCurrentThread();
        try
        {
            Assert.Equal(Libc.Gettid(), vcpu.ThreadId);
            var exit = vcpu.Run();                 // no pending kick: the guest runs to its first call
            Assert.True(GuestCall.TryDecode(exit, out var call), exit.ToString());
            Assert.Equal(GuestOp.Report, call.Op);
            Assert.Equal(0, vcpu.KicksDelivered);
        }
        finally
        {
            vcpu.UnbindThread();
        }
        Assert.Equal(0, vcpu.ThreadId);
        Assert.False(vcpu.TryKick());              // this thread no longer runs the vCPU: it is not signalled
    }

    [KvmFact]
    public void Kicks_at_a_thread_outside_kvm_run_queue_one_signal_not_one_per_kick()
    {
        // real-time signals queue per send and count against the user's RLIMIT_SIGPENDING across processes: a storm of
        // kicks at a vCPU that is not in KVM_RUN must not fill it (when it is full, every kick of that user is lost)
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        m.Image.Boot(vcpu, Workload.TouchOnce, m.ArgsFor(0, seed: 1), PrivilegeLevel.User);
        vcpu.BindToCurrentThread();
        try
        {
            for (var i = 0; i < 1000; i++)
                Assert.True(vcpu.TryKick(), $"kick {i}: tgkill failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
            var exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.Interrupted, exit.Kind);
            Assert.Equal(1, vcpu.KicksDelivered);                  // one signal was queued for the 1000 kicks
            exit = vcpu.Run();                                     // nothing left pending: the guest runs
            Assert.True(GuestCall.TryDecode(exit, out var call), exit.ToString());
            Assert.Equal(GuestOp.Report, call.Op);

            Assert.True(vcpu.TryKick());                           // drained: the next kick sends a signal again
            Assert.Equal(VcpuExitKind.Interrupted, vcpu.Run().Kind);
            Assert.Equal(2, vcpu.KicksDelivered);
        }
        finally
        {
            vcpu.UnbindThread();
        }
    }
}
