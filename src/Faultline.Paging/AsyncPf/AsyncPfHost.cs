using System.Buffers.Binary;
using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Engines.Shared;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// The host half of async page faults, whatever the guest ABI that notifies them: each vCPU's fixed table of
/// <see cref="AsyncPfOptions.Limit"/> outstanding faults (token, page, state), the FIFO of faults whose page is present,
/// one "page ready" in flight until the guest acknowledges it, the policy, and the halt wait. A protocol says how the
/// guest enables it, how "not present (T)" and "page ready (T)" reach the guest and what its acknowledgement is: x86's
/// MSRs, #PF and vector (<see cref="UserspaceAsyncPf"/>), or arm64's SMCCC calls, SDEI event and PPI
/// (<see cref="Arm.ArmAsyncPf"/>).
/// <list type="bullet">
/// <item>At a fault exit that can be async (<see cref="TryAccept"/>) a token is allocated, the protocol delivers "not
/// present", the page is requested and watched; the vCPU re-enters at once.</item>
/// <item>When the page is present (<see cref="IPresentObserver.OnPresent"/>, on the installing thread) the token goes
/// to the vCPU's FIFO; the head is handed to the protocol, the next one only after the guest's acknowledgement.</item>
/// <item>A halted vCPU (its guest had nothing to run) waits on its thread for its oldest page, as KVM's halt would.</item>
/// </list>
/// Thread-safety: per-vCPU state under that vCPU's lock; exits, halt and accept on the vCPU thread; ready from any thread.
/// </summary>
public abstract class AsyncPfHost : IAsyncPageFaults, IPresentObserver
{
    private protected readonly GuestMachine Machine;
    private readonly PageTracker _tracker;
    private readonly FaultPath _path;
    private protected PageTracker Tracker => _tracker;
    private protected FaultPath Path => _path;
    private protected readonly AsyncPfOptions Options;
    private protected readonly AsyncPfVcpu[] Vcpus;

    private protected AsyncPfHost(GuestMachine machine, PageTracker tracker, FaultPath path, AsyncPfOptions options, int historyPerVcpu)
    {
        Machine = machine; _tracker = tracker; _path = path; Options = options;
        Policy = new AsyncPfPolicy(options);
        Vcpus = new AsyncPfVcpu[machine.Config.Vcpus];
        for (var i = 0; i < Vcpus.Length; i++) Vcpus[i] = new AsyncPfVcpu(i, options.Limit, historyPerVcpu);
    }

    public AsyncPfPolicy Policy { get; }
    /// <summary>The guest ABI this host speaks.</summary>
    public abstract AsyncPfProtocol Protocol { get; }

    /// <summary>Sets the VM up for the protocol and starts watching installs. Before the vCPUs run.</summary>
    internal void Prepare()
    {
        PrepareVm();
        _tracker.SetObserver(this);
    }

    private protected abstract void PrepareVm();
    /// <summary>Whether the guest has enabled async PF on this vCPU (under its lock or on its thread).</summary>
    private protected abstract bool Enabled(AsyncPfVcpu s);
    private protected abstract bool SendAlways(AsyncPfVcpu s);
    /// <summary>Whether the guest runs in user mode at this exit.</summary>
    private protected abstract bool InUserMode(Vcpu vcpu);
    /// <summary>The protocol's own gate, after the common ones: null = go on, else the fault stays synchronous (or is retried) for that reason.</summary>
    private protected virtual SyncReason? Gate(Vcpu vcpu, AsyncPfVcpu s) => null;
    /// <summary>On the vCPU thread, under the lock: deliver "not present (T)" before the vCPU re-enters.</summary>
    private protected abstract void NotifyNotPresent(Vcpu vcpu, AsyncPfVcpu s, uint token);
    /// <summary>Under the lock, any thread: whether a "page ready" can be handed to the guest now (beyond one in flight).</summary>
    private protected virtual bool CanNotifyReady(AsyncPfVcpu s) => true;
    /// <summary>Under the lock, any thread: deliver "page ready (T)" (post it into the vCPU's loop).</summary>
    private protected abstract void NotifyReady(AsyncPfVcpu s, uint token);
    /// <summary>The protocol's exits (its enable and acknowledgement calls); false for any other exit.</summary>
    private protected abstract bool TryHandleProtocolExit(Vcpu vcpu, in VcpuExit exit);
    /// <summary>The guest disabled async PF: forget every outstanding fault (KVM drops them too). Under the lock.</summary>
    private protected virtual void OnDisabled(AsyncPfVcpu s) { }

    internal virtual void OnLoopStart(VcpuLoop loop)
    {
        var s = Vcpus[loop.Vcpu.Id];
        lock (s.Lock)
        {
            s.Loop = loop;
            DeliverNext(s);   // a "page ready" queued before the loop existed (an imported fault whose page came already)
        }
        if (Options.ReadyPoll > TimeSpan.Zero) s.Timer = SelfKickTimer.CreateForCurrentThread(loop.Vcpu);
    }

    internal void OnThreadStop(Vcpu vcpu)
    {
        var s = Vcpus[vcpu.Id];
        s.Timer?.Dispose();
        s.Timer = null;
    }

    /// <summary>The protocol's exits and halts; false for any other exit.</summary>
    internal bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) =>
        exit.Kind == VcpuExitKind.Hlt ? OnHalt(vcpu) : TryHandleProtocolExit(vcpu, exit);

    /// <summary>The guest wrote its enable word (x86's MSR_KVM_ASYNC_PF_EN, arm's ENABLE): disabling drops every outstanding fault.</summary>
    private protected void SetEnableWord(AsyncPfVcpu s, ulong word)
    {
        lock (s.Lock)
        {
            var was = Enabled(s);
            s.EnableMsr = word;
            if (was && !Enabled(s)) DropAll(s);
        }
    }

    private void DropAll(AsyncPfVcpu s)
    {
        for (var i = 0; i < s.States.Length; i++)
            if (s.States[i] == AsyncPfVcpu.Waiting) _tracker.Unwatch(s.Pages[i]);
        s.DropAll();
        s.Timer?.Disarm();
        OnDisabled(s);
    }

    /// <summary>The guest acknowledged the "page ready" it holds (vCPU thread): the next one may go.</summary>
    private protected void OnAck(AsyncPfVcpu s)
    {
        var now = Stopwatch.GetTimestamp();
        lock (s.Lock)
        {
            s.Acks++;
            var slot = s.InFlight;
            if (slot < 0) return;
            s.Record(new AsyncPfRecord(s.Id, s.Tokens[slot], s.Pages[slot], s.Accepted[slot], s.Present[slot], s.ReadyPosted, now));
            Policy.OnReadyMeasured(now - s.ReadyPosted);
            s.States[slot] = AsyncPfVcpu.Free;
            s.Outstanding--;
            s.InFlight = -1;
            if (s.Outstanding == 0) s.Timer?.Disarm();   // ACK is a vCPU-thread exit: the timer's own thread
            DeliverNext(s);
        }
    }

    /// <inheritdoc/>
    public bool TryAccept(Vcpu vcpu, ulong index, out uint token)
    {
        token = 0;
        var s = Vcpus[vcpu.Id];
        if (Policy.Mode == AsyncPfMode.Never || s.Loop is null) return false;
        if (!Enabled(s)) { s.SyncNotEnabled++; return false; }
        if ((vcpu.SyncedRegs.Rflags & 0x200) == 0) { s.SyncInterruptsOff++; return false; }   // KVM: interrupts must be allowed
        if (s.Outstanding >= s.Tokens.Length) { s.SyncLimit++; return false; }
        if (!Policy.PaysOff(_path.Source.ExpectedLatency)) { s.SyncPolicy++; return false; }
        if (!SendAlways(s) && !InUserMode(vcpu)) { s.SyncKernelMode++; return false; }   // only user mode, unless SEND_ALWAYS

        int slot = -1;
        SyncReason? gate;
        lock (s.Lock)
        {
            // the gate and the accept under one hold of the lock: a "page ready" posted in between would find the
            // protocol's state (arm: the control block) taken by this "not present" and be delivered into its handler
            gate = Gate(vcpu, s);
            if (gate == SyncReason.EventBlocked) s.SyncEventBlocked++;
            else if (gate == SyncReason.Retry) s.Retries++;
            else
            {
                slot = s.FreeSlot();
                do token = (++s.Counter << 12) | (uint)s.Id; while (token is 0 or uint.MaxValue);   // KVM's format, never 0
                s.Tokens[slot] = token;
                s.Pages[slot] = ulong.MaxValue;      // matched by no page until "not present" is out: its "ready" cannot overtake it
                s.States[slot] = AsyncPfVcpu.Waiting;
                s.Accepted[slot] = s.Loop.LastExitTimestamp;
                s.Present[slot] = 0;
                s.Outstanding++;
                s.Accepts++;
                NotifyNotPresent(vcpu, s, token);
            }
        }
        if (gate == SyncReason.EventBlocked) return false;
        if (gate == SyncReason.Retry)
        {
            // the guest has a notification to take first: let it in, start the fetch; the access faults again after it
            if (!_tracker.IsPresent(index)) _path.RequestOnly(index);
            return true;
        }
        if (s.Timer is { IsArmed: false } timer) timer.Arm(Options.ReadyPoll);
        lock (s.Lock) s.Pages[slot] = index;
        var present = _tracker.Watch(index);
        if (!present) present = _path.RequestOnly(index);
        if (present)
        {
            lock (s.Lock) s.PresentAtAccept++;
            MarkPresent(s, index);
        }
        return true;
    }

    /// <inheritdoc/>
    public void Ready(int vcpu, uint token)
    {
        var s = Vcpus[vcpu];
        lock (s.Lock)
        {
            for (var i = 0; i < s.States.Length; i++)
                if (s.States[i] == AsyncPfVcpu.Waiting && s.Tokens[i] == token) { Queue(s, i); break; }
            DeliverNext(s);
        }
    }

    void IPresentObserver.OnPresent(ulong index)
    {
        foreach (var s in Vcpus) MarkPresent(s, index);
    }

    private protected void MarkPresent(AsyncPfVcpu s, ulong index)
    {
        lock (s.Lock)
        {
            var any = false;
            for (var i = 0; i < s.States.Length; i++)
                if (s.States[i] == AsyncPfVcpu.Waiting && s.Pages[i] == index) { Queue(s, i); any = true; }
            if (any) DeliverNext(s);
        }
    }

    private void Queue(AsyncPfVcpu s, int slot)
    {
        s.States[slot] = AsyncPfVcpu.Queued;
        s.Present[slot] = Stopwatch.GetTimestamp();
        s.Enqueue(slot);
        _tracker.Unwatch(s.Pages[slot]);
    }

    /// <summary>Under the vCPU's lock: if the guest holds no "page ready" and the protocol can take one, hands it the next.</summary>
    private protected void DeliverNext(AsyncPfVcpu s)
    {
        if (s.InFlight >= 0 || s.QueuedReady == 0 || s.Loop is null || !CanNotifyReady(s)) return;
        var slot = s.Dequeue();
        s.States[slot] = AsyncPfVcpu.Delivered;
        s.InFlight = slot;
        s.ReadyPosted = Stopwatch.GetTimestamp();
        s.ReadyDelivered++;
        NotifyReady(s, s.Tokens[slot]);
    }

    /// <summary>The guest ran out of tasks: wait on this thread for the oldest outstanding page, then let its "page ready" in.</summary>
    private bool OnHalt(Vcpu vcpu)
    {
        var s = Vcpus[vcpu.Id];
        ulong page;
        lock (s.Lock)
        {
            if (s.InFlight >= 0 || s.QueuedReady > 0) { DeliverNext(s); return true; }
            var slot = s.OldestWaiting();
            if (slot < 0)
            {
                if (!Enabled(s)) return false;
                throw new GuestException($"vCPU {vcpu.Id}: the guest halted with no async page fault outstanding");
            }
            page = s.Pages[slot];
            s.HaltWaits++;
        }
        _path.WaitFor(page);
        MarkPresent(s, page);   // the installer may not have told us yet
        return true;
    }

    /// <summary>Writes a u32 of the guest's async-PF area (system region or RAM).</summary>
    private protected void WriteGuest(ulong gpa, uint value)
    {
        var region = gpa < Machine.System.Size ? Machine.System : Machine.Ram;
        BinaryPrimitives.WriteUInt32LittleEndian(region.Span(new GuestAddress(gpa), 4), value);
    }

    /// <summary>Import: a registration this protocol would refuse from the guest (reserved bits) is refused here too.</summary>
    private protected abstract void CheckRegistration(int vcpu, AsyncPfVcpuState state);

    /// <summary>Import: the guest holds the "page ready" of an imported fault (the protocol's block or area says so).</summary>
    private protected virtual void OnImportedDelivered(AsyncPfVcpu s) { }

    /// <summary>
    /// vCPU <paramref name="vcpu"/>'s registration and outstanding faults, oldest first (its vCPU stopped), for a
    /// migration or a snapshot: <see cref="Import"/> on the other side carries on with the same tokens.
    /// </summary>
    public AsyncPfVcpuState Export(int vcpu)
    {
        var s = Vcpus[vcpu];
        lock (s.Lock)
        {
            var list = new List<(long, AsyncPfOutstanding)>();
            for (var i = 0; i < s.States.Length; i++)
                if (s.States[i] != AsyncPfVcpu.Free) list.Add((s.Accepted[i], new AsyncPfOutstanding(s.Tokens[i], s.Pages[i], (AsyncPfStage)s.States[i])));
            return new AsyncPfVcpuState(s.EnableMsr, s.IntMsr, s.Counter, list.OrderBy(x => x.Item1).Select(x => x.Item2).ToList());
        }
    }

    /// <summary>
    /// Takes a registration captured elsewhere (<see cref="Export"/>, or a VM whose memory was all present: <see cref="IAsyncPfRegistration"/>) on vCPU
    /// <paramref name="vcpu"/>'s own thread, after its loop started and before it runs: the MSRs as the guest wrote
    /// them, the token counter, and each outstanding fault: one whose "page ready" the guest holds stays delivered
    /// (its ACK releases the next); the others are requested here and get their "page ready" once present, in order.
    /// </summary>
    public void Import(int vcpu, AsyncPfVcpuState state)
    {
        var s = Vcpus[vcpu];
        if (state.Outstanding.Count > s.Tokens.Length)
            throw new UsageException($"vCPU {vcpu}: {state.Outstanding.Count} outstanding async page faults, this host allows {s.Tokens.Length}");
        CheckRegistration(vcpu, state);
        var now = Stopwatch.GetTimestamp();
        var requests = new List<ulong>();
        lock (s.Lock)
        {
            if (s.Outstanding != 0) throw new InvalidOperationException($"vCPU {vcpu}: async page faults are outstanding already");
            s.EnableMsr = state.EnableMsr;
            s.IntMsr = state.InterruptMsr;
            s.Counter = state.TokenCounter;
            foreach (var f in state.Outstanding)
            {
                if (f.Page >= Tracker.Pages) throw new UsageException($"vCPU {vcpu}: async page fault token 0x{f.Token:x} is for page {f.Page}, the guest has {Tracker.Pages}");
                var slot = s.FreeSlot();
                s.Tokens[slot] = f.Token;
                s.Pages[slot] = f.Page;
                s.Accepted[slot] = now;
                s.Present[slot] = 0;
                s.Outstanding++;
                if (f.Stage == AsyncPfStage.Delivered && s.InFlight < 0)
                {
                    s.States[slot] = AsyncPfVcpu.Delivered;
                    s.InFlight = slot;
                    s.ReadyPosted = now;
                    OnImportedDelivered(s);
                }
                else
                {
                    s.States[slot] = AsyncPfVcpu.Waiting;
                    requests.Add(f.Page);
                }
            }
        }
        foreach (var page in requests)
        {
            var present = Tracker.Watch(page);
            if (!present) present = Path.RequestOnly(page);
            if (present) MarkPresent(s, page);
        }
    }

    public AsyncPfStats Snapshot()
    {
        long Sum(Func<AsyncPfVcpu, long> f) { long t = 0; foreach (var v in Vcpus) lock (v.Lock) t += f(v); return t; }
        return new AsyncPfStats
        {
            NotPresent = Sum(v => v.Accepts), ReadyDelivered = Sum(v => v.ReadyDelivered), SyncNotEnabled = Sum(v => v.SyncNotEnabled),
            SyncInterruptsOff = Sum(v => v.SyncInterruptsOff), SyncKernelMode = Sum(v => v.SyncKernelMode), SyncLimit = Sum(v => v.SyncLimit),
            SyncPolicy = Sum(v => v.SyncPolicy), SyncEventBlocked = Sum(v => v.SyncEventBlocked), Retries = Sum(v => v.Retries),
            PresentAtAccept = Sum(v => v.PresentAtAccept), HaltWaits = Sum(v => v.HaltWaits), PolicyNotifyCostUs = Policy.NotifyCost.TotalMicroseconds,
        };
    }

    /// <summary>Every completed async fault's timeline (after the run).</summary>
    public IReadOnlyList<AsyncPfRecord> History()
    {
        var all = new List<AsyncPfRecord>();
        foreach (var v in Vcpus) lock (v.Lock) all.AddRange(v.History.AsSpan(0, v.HistoryCount).ToArray());
        return all;
    }

    /// <summary>Faults still outstanding per vCPU (0 after a clean run).</summary>
    public int OutstandingOn(int vcpu) { var s = Vcpus[vcpu]; lock (s.Lock) return s.Outstanding; }
}

/// <summary>Why a protocol's gate keeps a fault from going async.</summary>
internal enum SyncReason
{
    /// <summary>The "not present" event cannot reach the guest now (SDEI: masked, disabled, or a handler running): synchronous.</summary>
    EventBlocked,
    /// <summary>The guest has a notification to take first: re-enter without resolving; the access faults again after it.</summary>
    Retry,
}

/// <summary>Which guest ABI notifies async page faults.</summary>
public enum AsyncPfProtocol
{
    /// <summary>x86's PV async PF (kvm_para.h): MSRs, #PF with CR2 = token, a "page ready" vector, an ACK MSR.</summary>
    X86,
    /// <summary>arm64's (seed 003): SMCCC calls, an SDEI event for "not present", a PPI for "page ready", IRQ_ACK.</summary>
    Arm,
}
