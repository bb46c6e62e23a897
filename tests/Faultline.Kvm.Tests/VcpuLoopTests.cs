using System.Collections.Concurrent;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Threads;
using Faultline.TestKit;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// The one vCPU loop on real KVM: events posted from another thread are injected from the vCPU's own thread and reach
/// the guest's IDT handlers (interrupt 0xEC; #PF with error code and CR2 payload), an interrupt posted while the guest
/// has IF=0 waits for the interrupt window, the loop allocates nothing per exit, and it stops from another thread.
/// </summary>
public sealed class VcpuLoopTests
{
    private const byte IrqVector = 0xEC;
    private const int WindowProgramVector = 0x81;    // never raised: its "handler" is the window test's CPL0 program (sti)
    private const int WindowProgramUserVector = 0x82; // the same at CPL3, without sti: this host refuses it there
    private const ulong ReportDoorbell = GuestLayout.Doorbell + 8 * (ulong)GuestOp.Report;
    private const ulong DoneDoorbell = GuestLayout.Doorbell + 8 * (ulong)GuestOp.Done;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);   // a bound on waiting, not a timing assert
    private static readonly GuestAddress Flag = GuestLayout.VcpuDataOf(0);
    private static readonly GuestAddress Flag2 = GuestLayout.VcpuDataOf(0) + 8;

    /// <summary>The guest kernel of these tests: handlers that report what they received, and the window test's program.</summary>
    private static GuestKernel TestKernel()
    {
        var k = new GuestKernel();
        k.SetHandler(IrqVector, ReportInterrupt);
        k.SetHandler(VcpuEvent.PageFaultVector, ReportPageFault);
        k.SetHandler(WindowProgramVector, a => WindowProgram(a, sti: true));
        k.SetHandler(WindowProgramUserVector, a => WindowProgram(a, sti: false));
        return k;
    }

    /// <summary>Interrupt 0xEC: report(0xEC), iretq. Registers are preserved, so a spinning guest goes on.</summary>
    private static void ReportInterrupt(Assembler a)
    {
        a.push(rax); a.push(rsi);
        a.mov(rsi, ReportDoorbell);
        a.mov(rax, (ulong)IrqVector);
        a.mov(__qword_ptr[rsi], rax);
        a.pop(rsi); a.pop(rax);
        a.iretq();
    }

    /// <summary>#PF: report(CR2), report(error code), iretq.</summary>
    private static void ReportPageFault(Assembler a)
    {
        // GuestKernel popped the error code before this body; nothing wrote below RSP since (interrupt gate: IF=0)
        a.sub(rsp, 8);
        a.push(rax); a.push(rsi);
        a.mov(rsi, ReportDoorbell);
        a.mov(rax, cr2);
        a.mov(__qword_ptr[rsi], rax);
        a.mov(rax, __qword_ptr[rsp + 16]);
        a.mov(__qword_ptr[rsi], rax);
        a.pop(rsi); a.pop(rax);
        a.add(rsp, 8);
        a.iretq();
    }

    /// <summary>
    /// Entered with IF=0: report(1), wait for the host's flag, sti (CPL0 only), wait for the host's second flag,
    /// report(2), done(0). At CPL3 this host gives the guest no way to set IF (<c>sti</c> with IOPL=3 raises #GP,
    /// <c>int 0x80</c> #UD), so there the vCPU thread sets it. The second wait leaves the guest no exit to make but the
    /// window's: on this host KVM_EXIT_IRQ_WINDOW_OPEN comes at the guest's next exit, not when IF is set.
    /// </summary>
    private static void WindowProgram(Assembler a, bool sti)
    {
        var wait = a.CreateLabel();
        var wait2 = a.CreateLabel();
        var hang = a.CreateLabel();
        a.mov(rsi, ReportDoorbell);
        a.mov(rax, 1UL);
        a.mov(__qword_ptr[rsi], rax);
        a.mov(rdi, Flag.Value);
        a.Label(ref wait);
        a.mov(rax, __qword_ptr[rdi]);
        a.test(rax, rax);
        a.jz(wait);
        if (sti) a.sti();
        a.Label(ref wait2);
        a.mov(rax, __qword_ptr[rdi + 8]);
        a.test(rax, rax);
        a.jz(wait2);
        a.mov(rax, 2UL);
        a.mov(__qword_ptr[rsi], rax);
        a.mov(rsi, DoneDoorbell);
        a.xor(eax, eax);
        a.mov(__qword_ptr[rsi], rax);
        a.Label(ref hang);
        a.jmp(hang);
    }

    private static GuestMachine CreateMachine()
    {
        var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB) { Kernel = TestKernel() });
        m.Vm.EnableExceptionPayload();
        return m;
    }

    /// <summary>The Spin workload at CPL3, with interrupts on or off.</summary>
    private static void BootSpin(GuestMachine m, bool interruptsOn)
    {
        var vcpu = m.Vcpus[0];
        m.Image.Boot(vcpu, Workload.Spin, m.ArgsFor(0), PrivilegeLevel.User);
        var r = vcpu.GetRegs();
        r.Rflags = interruptsOn ? 0x202UL : 0x2UL;
        vcpu.SetRegs(r);
    }

    private sealed record Injection(int ThreadId, VcpuEvent Event, VcpuExitKind AtExit, bool InterruptFlag, ulong Rcx);

    /// <summary>Hooks that keep what the guest reported and where each injection happened.</summary>
    private sealed class RecordingHooks : IVcpuHooks
    {
        public BlockingCollection<ulong> Reports { get; } = new();
        public ConcurrentQueue<Injection> Injections { get; } = new();
        public volatile int VcpuThreadId;
        public ulong? Done;

        public void OnThreadStart(VcpuLoop loop) => VcpuThreadId = HostThread.CurrentId;

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (call.Op == GuestOp.Report) { Reports.Add(call.Value); return VcpuLoopAction.Continue; }
            Done = call.Value;
            return VcpuLoopAction.Finish;
        }

        public void OnInjected(VcpuLoop loop, in VcpuEvent e) => Injections.Enqueue(new Injection(HostThread.CurrentId, e, loop.LastExit.Kind, loop.Vcpu.InterruptFlag, loop.Vcpu.SyncedRegs.Rcx));
    }

    /// <summary>A loop on its own named thread; <see cref="StopAndJoin"/> says whether it ended (else the machine must not be disposed).</summary>
    private sealed class LoopThread
    {
        private readonly Thread _thread;
        public VcpuLoopEnd? End { get; private set; }
        public Exception? Error { get; private set; }

        public LoopThread(VcpuLoop loop)
        {
            Loop = loop;
            _thread = new Thread(() =>
            {
                try { End = loop.Run(); }
                catch (Exception e) { Error = e; }
            }) { Name = "fl-vcpu0", IsBackground = true };
            _thread.Start();
        }

        public VcpuLoop Loop { get; }
        public bool Join(TimeSpan timeout) => _thread.Join(timeout);

        public bool StopAndJoin()
        {
            Loop.RequestStop();
            for (var i = 0; i < 200; i++)
            {
                if (_thread.Join(50)) return true;
                Loop.Vcpu.Kick();   // a kick may wait for a host tick: resend
            }
            return false;
        }
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var spin = new SpinWait();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(sw.Elapsed < Wait, $"{what} did not happen within {Wait.TotalSeconds} s");
            spin.SpinOnce();
        }
    }

    private static ulong Take(RecordingHooks hooks, string what)
    {
        Assert.True(hooks.Reports.TryTake(out var v, Wait), $"no report of {what} within {Wait.TotalSeconds} s");
        return v;
    }

    [KvmFact]
    public void Events_posted_from_another_thread_are_injected_on_the_vcpu_thread_and_reach_the_guest_handlers()
    {
        const int rounds = 10;
        var m = CreateMachine();
        BootSpin(m, interruptsOn: true);
        var hooks = new RecordingHooks();
        var t = new LoopThread(new VcpuLoop(m.Vcpus[0], hooks));
        var poster = HostThread.CurrentId;
        var expected = new List<(uint Code, ulong Cr2)>();
        try
        {
            WaitUntil(() => hooks.VcpuThreadId != 0, "the vCPU thread start");
            for (var i = 0; i < rounds; i++)
            {
                Assert.True(t.Loop.TryPost(VcpuEvent.Interrupt(IrqVector)));
                Assert.Equal(IrqVector, Take(hooks, $"interrupt {i}"));
                var code = i % 2 == 0 ? 6u : 4u;                               // user write / user read, not present
                var cr2 = 0x7f12_3400_0000UL + (ulong)i * 0x1000 + 0x238;
                expected.Add((code, cr2));
                Assert.True(t.Loop.TryPost(VcpuEvent.PageFault(code, cr2)));
                Assert.Equal(cr2, Take(hooks, $"#PF {i} CR2"));
                Assert.Equal(code, Take(hooks, $"#PF {i} error code"));
            }
        }
        finally
        {
            if (t.StopAndJoin()) m.Dispose();
        }
        Assert.Null(t.Error);
        Assert.Equal(VcpuLoopEnd.Stopped, t.End);
        var injections = hooks.Injections.ToArray();
        Assert.Equal(2 * rounds, injections.Length);
        Assert.NotEqual(poster, hooks.VcpuThreadId);
        Assert.All(injections, x => Assert.Equal(hooks.VcpuThreadId, x.ThreadId));   // the ioctls ran on the vCPU thread, not the poster's
        Assert.Equal(expected, injections.Where(x => x.Event.Kind == VcpuEventKind.Exception).Select(x => (x.Event.ErrorCode, x.Event.Payload)));
        Assert.Equal((long)rounds, t.Loop.ExceptionsInjected);
        Assert.Equal((long)rounds, t.Loop.InterruptsInjected);
    }

    /// <summary>Before each of the first <c>rounds</c> entries, has another thread post an interrupt and waits until it did.</summary>
    private sealed class PostDuringExitHooks(int rounds) : IVcpuHooks
    {
        public RecordingHooks Inner { get; } = new();
        private int _posted;
        public void OnThreadStart(VcpuLoop loop) => Inner.OnThreadStart(loop);
        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call) => Inner.OnGuestCall(loop, call);
        public void OnInjected(VcpuLoop loop, in VcpuEvent e) => Inner.OnInjected(loop, e);
        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (_posted < rounds && loop.PendingEvents == 0 && Inner.Injections.Count == _posted)
            {
                var t = new Thread(() => loop.TryPost(VcpuEvent.Interrupt(IrqVector)));
                t.Start();
                t.Join();
                _posted++;
            }
            return VcpuLoopAction.Continue;
        }
    }

    [KvmFact]
    public void An_event_posted_while_the_vcpu_thread_handles_an_exit_is_injected_without_a_kick()
    {
        const int rounds = 5;
        var m = CreateMachine();
        BootSpin(m, interruptsOn: true);
        var hooks = new PostDuringExitHooks(rounds);
        var t = new LoopThread(new VcpuLoop(m.Vcpus[0], hooks));
        try
        {
            for (var i = 0; i < rounds; i++) Assert.Equal(IrqVector, Take(hooks.Inner, $"interrupt {i}"));
        }
        finally
        {
            if (t.StopAndJoin()) m.Dispose();
        }
        Assert.Null(t.Error);
        Assert.Equal((long)rounds, t.Loop.InterruptsInjected);
        Assert.Equal(0, t.Loop.KicksSent);   // each post came while the vCPU thread was outside KVM_RUN
    }

    [KvmFact]
    public void A_burst_of_page_faults_posted_when_interruptible_is_delivered_one_handler_at_a_time_in_order()
    {
        const int burst = 8;
        var m = CreateMachine();
        BootSpin(m, interruptsOn: true);
        var hooks = new RecordingHooks();
        var t = new LoopThread(new VcpuLoop(m.Vcpus[0], hooks));
        var seen = new List<ulong>();
        try
        {
            WaitUntil(() => hooks.VcpuThreadId != 0, "the vCPU thread start");
            // without WhenInterruptible each would go in at the next exit: the previous handler's report, nesting them
            for (var i = 0; i < burst; i++)
                Assert.True(t.Loop.TryPost(VcpuEvent.PageFault((uint)(4 + i % 2 * 2), 0x5000_0000UL + (ulong)i * 8).WhenInterruptible()));
            for (var i = 0; i < 2 * burst; i++) seen.Add(Take(hooks, $"report {i} of the burst"));
        }
        finally
        {
            if (t.StopAndJoin()) m.Dispose();
        }
        Assert.Null(t.Error);
        var expected = new List<ulong>();
        for (var i = 0; i < burst; i++) { expected.Add(0x5000_0000UL + (ulong)i * 8); expected.Add((ulong)(4 + i % 2 * 2)); }
        Assert.Equal(expected, seen);
        Assert.Equal((long)burst, t.Loop.ExceptionsInjected);
        Assert.All(hooks.Injections, x => Assert.Equal(hooks.VcpuThreadId, x.ThreadId));
    }

    /// <summary>On request, before one KVM_RUN: posts two #PFs from the vCPU thread and makes that entry end before the guest runs.</summary>
    private sealed class NoEntryHooks : IVcpuHooks
    {
        public readonly RecordingHooks Inner = new();
        public volatile bool Arm;
        public int Armed;

        public void OnThreadStart(VcpuLoop loop) => Inner.OnThreadStart(loop);
        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call) => Inner.OnGuestCall(loop, call);
        public void OnInjected(VcpuLoop loop, in VcpuEvent e) => Inner.OnInjected(loop, e);

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (!Arm || Armed != 0) return VcpuLoopAction.Continue;
            Armed = 1;
            Assert.True(loop.TryPost(VcpuEvent.PageFault(6, 0xaaaa_0000).WhenInterruptible()));
            Assert.True(loop.TryPost(VcpuEvent.PageFault(4, 0xbbbb_0000).WhenInterruptible()));
            loop.Vcpu.ImmediateExit = true;   // KVM_RUN returns EINTR at once: the first #PF stays pending, undelivered
            return VcpuLoopAction.Continue;
        }
    }

    [KvmFact]
    public void An_exception_whose_entry_never_reached_the_guest_is_not_overwritten_by_the_next()
    {
        var m = CreateMachine();
        BootSpin(m, interruptsOn: true);
        var hooks = new NoEntryHooks();
        var t = new LoopThread(new VcpuLoop(m.Vcpus[0], hooks));
        var seen = new List<ulong>();
        try
        {
            WaitUntil(() => hooks.Inner.VcpuThreadId != 0, "the vCPU thread start");
            hooks.Arm = true;
            m.Vcpus[0].Kick();
            for (var i = 0; i < 4; i++) seen.Add(Take(hooks.Inner, $"report {i}"));
        }
        finally
        {
            if (t.StopAndJoin()) m.Dispose();
        }
        Assert.Null(t.Error);
        Assert.Equal(new ulong[] { 0xaaaa_0000, 6, 0xbbbb_0000, 4 }, seen);   // both, in order, each handler run to its end
        Assert.Equal(2L, t.Loop.ExceptionsInjected);
        Assert.True(t.Loop.WindowRequests >= 1, "the second #PF was not held back while the first was in flight");
    }

    /// <summary>Records like <see cref="RecordingHooks"/>; with <c>hostOpens</c>, sets RFLAGS.IF on the vCPU thread once the flag is up.</summary>
    private sealed class WindowHooks(GuestMachine m, bool hostOpens) : IVcpuHooks
    {
        public readonly RecordingHooks Inner = new();
        private bool _opened;

        public void OnThreadStart(VcpuLoop loop) => Inner.OnThreadStart(loop);
        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call) => Inner.OnGuestCall(loop, call);
        public void OnInjected(VcpuLoop loop, in VcpuEvent e) => Inner.OnInjected(loop, e);

        public VcpuLoopAction BeforeRun(VcpuLoop loop)
        {
            if (!hostOpens || _opened || Volatile.Read(ref m.System.Qword(Flag)) == 0) return VcpuLoopAction.Continue;
            _opened = true;
            var r = loop.Vcpu.GetRegs();
            r.Rflags |= 0x200;
            loop.Vcpu.SetRegs(r);
            return VcpuLoopAction.Continue;
        }
    }

    [KvmTheory]
    [InlineData(PrivilegeLevel.Kernel)]
    [InlineData(PrivilegeLevel.User)]
    public void An_interrupt_posted_while_the_guest_has_interrupts_off_is_injected_when_the_window_opens(PrivilegeLevel level)
    {
        var m = CreateMachine();
        var vcpu = m.Vcpus[0];
        m.Image.Boot(vcpu, Workload.Spin, m.ArgsFor(0), level);
        var r = vcpu.GetRegs();
        r.Rip = m.Image.HandlerOf(level == PrivilegeLevel.Kernel ? WindowProgramVector : WindowProgramUserVector);   // kernel code pages are user-mapped
        r.Rflags = 0x2;   // IF=0
        vcpu.SetRegs(r);
        var window = new WindowHooks(m, hostOpens: level == PrivilegeLevel.User);
        var hooks = window.Inner;
        var t = new LoopThread(new VcpuLoop(vcpu, window));
        var early = new List<ulong>();
        bool heldWhileClosed;
        var ended = false;
        try
        {
            Assert.Equal(1UL, Take(hooks, "the guest running with IF=0"));
            Assert.True(t.Loop.TryPost(VcpuEvent.Interrupt(IrqVector)));
            WaitUntil(() => t.Loop.WaitingForWindow, "the loop's interrupt-window request");
            heldWhileClosed = t.Loop.InterruptsInjected == 0 && hooks.Injections.IsEmpty;
            while (hooks.Reports.TryTake(out var v)) early.Add(v);
            Volatile.Write(ref m.System.Qword(Flag), 1UL);   // the guest (CPL0) or the vCPU thread (CPL3) turns IF on now
            if (level == PrivilegeLevel.User) vcpu.Kick();     // out of KVM_RUN, so that BeforeRun sees the flag
            WaitUntil(() => !hooks.Injections.IsEmpty, "the interrupt's injection once IF is on");
            Volatile.Write(ref m.System.Qword(Flag2), 1UL);
            ended = t.Join(Wait);
        }
        finally
        {
            if (ended || t.StopAndJoin()) m.Dispose();
        }
        Assert.True(ended, "the window program did not finish");
        Assert.Null(t.Error);
        Assert.Equal(VcpuLoopEnd.Finished, t.End);
        Assert.True(heldWhileClosed, "the interrupt was injected while the guest had IF=0");
        Assert.Empty(early);
        var injection = Assert.Single(hooks.Injections);
        Assert.Equal(new ulong[] { IrqVector, 2 }, hooks.Reports.ToArray());   // delivered as the window opened, before the guest's next report
        Assert.Equal(VcpuExitKind.IrqWindowOpen, injection.AtExit);
        Assert.True(injection.InterruptFlag);
        Assert.Equal(hooks.VcpuThreadId, injection.ThreadId);
        Assert.True(t.Loop.WindowExits >= 1);
        Assert.False(t.Loop.WaitingForWindow);
        Assert.Equal(0UL, hooks.Done);
    }

    /// <summary>Counts reports and samples the vCPU thread's allocation counter at two of them: allocation-free itself.</summary>
    private sealed class AllocationHooks(int warmup, int total) : IVcpuHooks
    {
        private int _reports;
        public long Bytes0, Bytes1, Exits0, Exits1;
        public int Reports => Volatile.Read(ref _reports);

        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            var n = _reports + 1;
            if (n == warmup) { Bytes0 = GC.GetAllocatedBytesForCurrentThread(); Exits0 = loop.Exits; }
            if (n == total) { Bytes1 = GC.GetAllocatedBytesForCurrentThread(); Exits1 = loop.Exits; }
            Volatile.Write(ref _reports, n);
            return VcpuLoopAction.Continue;
        }
    }

    [KvmFact]
    public void The_loop_allocates_nothing_per_exit_while_injecting_and_absorbing_kicks()
    {
        const int events = 300;   // half interrupts (one report each), half #PFs (two reports each)
        var reportsPerPair = 3;
        var total = events / 2 * reportsPerPair;
        var warmup = 10 * reportsPerPair;
        var m = CreateMachine();
        BootSpin(m, interruptsOn: true);
        var hooks = new AllocationHooks(warmup, total);
        var t = new LoopThread(new VcpuLoop(m.Vcpus[0], hooks));
        long posterBytes = 0;
        try
        {
            WaitUntil(() => m.Vcpus[0].ThreadId != 0, "the vCPU thread start");
            for (var i = 0; i < events; i++)
            {
                var want = hooks.Reports + (i % 2 == 0 ? 1 : 2);
                var e = i % 2 == 0 ? VcpuEvent.Interrupt(IrqVector) : VcpuEvent.PageFault(6, 0x1234_5000UL + (ulong)i);
                var b0 = GC.GetAllocatedBytesForCurrentThread();
                Assert.True(t.Loop.TryPost(e));
                if (i % 3 == 0) t.Loop.Vcpu.Kick();   // an extra Interrupted exit for the loop to absorb
                posterBytes += GC.GetAllocatedBytesForCurrentThread() - b0;
                WaitUntil(() => hooks.Reports >= want, $"the guest's report of event {i}");
            }
        }
        finally
        {
            if (t.StopAndJoin()) m.Dispose();
        }
        Assert.Null(t.Error);
        Assert.Equal(VcpuLoopEnd.Stopped, t.End);
        Assert.Equal(total, hooks.Reports);
        Assert.True(hooks.Exits1 - hooks.Exits0 >= total - warmup, $"only {hooks.Exits1 - hooks.Exits0} exits were measured");
        Assert.Equal(0, hooks.Bytes1 - hooks.Bytes0);   // vCPU thread: KVM_RUN, exits, injections, kicks drained
        Assert.Equal(0, posterBytes);                    // posting thread: the ring and the kick
    }

    /// <summary>An exit handler that sees every exit first and takes none, and records where it was started and stopped.</summary>
    private sealed class DecliningHandler : IExitHandler
    {
        public int StartThread, StopThread, InterruptedSeen;
        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
        {
            if (exit.Kind == VcpuExitKind.Interrupted) Interlocked.Increment(ref InterruptedSeen);
            return false;
        }
        public void OnVcpuThreadStart(Vcpu vcpu) => StartThread = HostThread.CurrentId;
        public void OnVcpuThreadStop(Vcpu vcpu) => StopThread = HostThread.CurrentId;
    }

    [KvmFact]
    public void Kicks_are_absorbed_after_the_exit_handler_declines_them_and_a_stop_from_another_thread_ends_the_loop()
    {
        var m = CreateMachine();
        BootSpin(m, interruptsOn: false);
        var hooks = new RecordingHooks();
        var handler = new DecliningHandler();
        var vcpu = m.Vcpus[0];
        var t = new LoopThread(new VcpuLoop(vcpu, hooks, handler));
        InvalidOperationException? foreign = null;
        int vcpuTid;
        var ended = false;
        try
        {
            WaitUntil(() => hooks.VcpuThreadId != 0, "the vCPU thread start");
            vcpuTid = hooks.VcpuThreadId;
            for (var i = 1; i <= 5; i++)
            {
                vcpu.Kick();
                var n = i;
                WaitUntil(() => Volatile.Read(ref handler.InterruptedSeen) >= n, $"kick {i}'s exit");
            }
            // KVM_INTERRUPT from a thread other than the vCPU's would block while KVM_RUN runs: refused instead
            foreign = Assert.Throws<InvalidOperationException>(() => vcpu.Interrupt(IrqVector));
            t.Loop.RequestStop();
            ended = t.Join(Wait);
        }
        finally
        {
            if (ended || t.StopAndJoin()) m.Dispose();
        }
        Assert.True(ended, "RequestStop did not end the loop");
        Assert.Null(t.Error);
        Assert.Equal(VcpuLoopEnd.Stopped, t.End);
        Assert.Contains("own thread", foreign!.Message);
        Assert.True(handler.InterruptedSeen >= 5);
        Assert.True(vcpu.KicksDelivered >= 5);
        Assert.Equal(vcpuTid, handler.StartThread);
        Assert.Equal(vcpuTid, handler.StopThread);
        Assert.Equal(0, vcpu.ThreadId);   // unbound when the loop ended
        Assert.Empty(hooks.Reports);
    }

    /// <summary>Like the migration destination: done() of a pass boots the next workload on the vCPU thread and the loop goes on.</summary>
    private sealed class TwoPassHooks(GuestMachine m, WorkloadArgs args) : IVcpuHooks
    {
        public readonly List<ulong> Results = [];
        public VcpuLoopAction OnGuestCall(VcpuLoop loop, GuestCall call)
        {
            if (call.Op == GuestOp.Report) return VcpuLoopAction.Continue;
            Results.Add(call.Value);
            if (Results.Count == 2) return VcpuLoopAction.Finish;
            m.Image.Boot(loop.Vcpu, Workload.Verify, args, PrivilegeLevel.User);
            return VcpuLoopAction.Continue;
        }
    }

    [KvmFact]
    public void A_hook_can_continue_after_done_by_booting_the_next_workload()
    {
        using var m = CreateMachine();
        var args = m.ArgsFor(0, seed: 0xabc, qwordsPerPage: 8);
        m.Image.Boot(m.Vcpus[0], Workload.Write, args, PrivilegeLevel.User);
        var hooks = new TwoPassHooks(m, args);
        var loop = new VcpuLoop(m.Vcpus[0], hooks);
        VcpuLoopEnd? end = null;
        var thread = new Thread(() => end = loop.Run()) { Name = "fl-vcpu0" };
        thread.Start();
        Assert.True(thread.Join(Wait), "the two passes did not finish");
        Assert.Equal(VcpuLoopEnd.Finished, end);
        Assert.Equal(new[] { m.Ram.PageCount, 0UL }, hooks.Results);   // Write: pages written; Verify: no mismatch
        for (var gpa = m.Ram.Base.Value; gpa < m.Ram.End.Value; gpa += 4096)
            Assert.Equal(gpa + 0xabc, m.Ram.Qword(new GuestAddress(gpa)));
    }

    [KvmFact]
    public void An_exit_nobody_handles_fails_the_loop_with_the_exit_and_rip()
    {
        using var m = CreateMachine();
        m.Image.Boot(m.Vcpus[0], Workload.ExitTour, m.ArgsFor(0, seed: 0x5a), PrivilegeLevel.Kernel);   // starts with out 0x10
        var loop = new VcpuLoop(m.Vcpus[0], new RecordingHooks());
        Exception? error = null;
        var thread = new Thread(() => { try { loop.Run(); } catch (Exception e) { error = e; } }) { Name = "fl-vcpu0" };
        thread.Start();
        Assert.True(thread.Join(Wait));
        var ex = Assert.IsType<GuestException>(error);
        Assert.Contains("unexpected exit: IoOut port 0x10", ex.Message);
        Assert.Contains("data 0x5a", ex.Message);
        Assert.Matches("at rip 0x4[0-9a-f]{4}$", ex.Message);   // inside the workload code
        Assert.Equal(0, m.Vcpus[0].ThreadId);
    }
}
