using System.Buffers.Binary;
using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;
using Faultline.Paging.Engines.Shared;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// Async page faults for a kernel without them: what KVM's in-kernel async PF and the RFC's "async PF user" do, built
/// from MSR exits, KVM_SET_VCPU_EVENTS and KVM_INTERRUPT, with the guest ABI a Linux guest speaks (kvm_para.h):
/// <list type="bullet">
/// <item>The guest enables it with MSR_KVM_ASYNC_PF_INT (the "page ready" vector) and MSR_KVM_ASYNC_PF_EN (its 64-byte
/// area, ENABLED | DELIVERY_AS_INT): both are intercepted with an MSR filter and kept here per vCPU.</item>
/// <item>"Not present (T)": at a fault exit that can be async (<see cref="TryAccept"/>), the area's flags word is set
/// to 1 and a #PF with CR2 = T is queued into the vCPU's loop; the page is requested and watched; the vCPU re-enters at once.</item>
/// <item>"Page ready (T)": when the page is present (<see cref="IPresentObserver.OnPresent"/>, on the installing
/// thread), T goes to the vCPU's ready FIFO; the head is written into the area's token word and the vector posted into
/// the loop, which kicks the vCPU out of KVM_RUN if needed and injects it when the guest has interrupts on. The next
/// one goes only after the guest's MSR_KVM_ASYNC_PF_ACK (one "page ready" at a time, as KVM).</item>
/// <item>A halted vCPU (its guest had nothing to run) waits on its thread for its oldest page, as KVM's halt would.</item>
/// </list>
/// Thread-safety: per-vCPU state under that vCPU's lock; MSR, halt and accept on the vCPU thread; ready from any thread.
/// </summary>
public sealed class UserspaceAsyncPf : IAsyncPageFaults, IPresentObserver
{
    private const uint MsrEn = KvmPvAsyncPf.MsrEnable, MsrInt = KvmPvAsyncPf.MsrInterrupt, MsrAck = KvmPvAsyncPf.MsrAck;
    private readonly GuestMachine _m;
    private readonly PageTracker _tracker;
    private readonly FaultPath _path;
    private readonly AsyncPfOptions _options;
    private readonly AsyncPfVcpu[] _vcpus;

    internal UserspaceAsyncPf(GuestMachine machine, PageTracker tracker, FaultPath path, AsyncPfOptions options, int historyPerVcpu = 1 << 14)
    {
        _m = machine; _tracker = tracker; _path = path; _options = options;
        Policy = new AsyncPfPolicy(options);
        _vcpus = new AsyncPfVcpu[machine.Config.Vcpus];
        for (var i = 0; i < _vcpus.Length; i++) _vcpus[i] = new AsyncPfVcpu(i, options.Limit, historyPerVcpu);
    }

    public AsyncPfPolicy Policy { get; }

    /// <summary>Sets the VM up (exception payloads, the MSR filter) and starts watching installs. Before the vCPUs run.</summary>
    internal void Prepare()
    {
        _m.Vm.EnableExceptionPayload();
        InterceptMsrs(_m.Vm);
        _tracker.SetObserver(this);
    }

    /// <summary>The MSR filter: the range starts at MSR_KVM_ASYNC_PF_EN; exits on EN (bit 0), INT (bit 4) and ACK (bit 5), KVM keeps the rest.</summary>
    internal static void InterceptMsrs(Vm vm) => vm.InterceptMsrs(MsrEn, 6, 1UL << 0 | 1UL << 4 | 1UL << 5);

    internal static bool IsAsyncPfMsr(ulong msr) => msr is MsrEn or MsrInt or MsrAck;

    /// <summary>KVM's checks: reserved bits of INT (above the vector) or EN give #GP.</summary>
    internal static bool IsValidWrite(uint msr, ulong value) => msr switch
    {
        MsrInt => (value & ~0xFFUL) == 0,
        MsrEn => (value & KvmPvAsyncPf.ReservedBits) == 0,
        _ => true,
    };

    internal void OnLoopStart(VcpuLoop loop)
    {
        var s = _vcpus[loop.Vcpu.Id];
        s.Loop = loop;
        if (_options.ReadyPoll > TimeSpan.Zero) s.Timer = SelfKickTimer.CreateForCurrentThread(loop.Vcpu);
    }

    internal void OnThreadStop(Vcpu vcpu)
    {
        var s = _vcpus[vcpu.Id];
        s.Timer?.Dispose();
        s.Timer = null;
    }

    /// <summary>The guest's MSR accesses and halts; false for any other exit.</summary>
    internal bool TryHandleExit(Vcpu vcpu, in VcpuExit exit)
    {
        switch (exit.Kind)
        {
            case VcpuExitKind.MsrWrite when IsAsyncPfMsr(exit.Flags):
                OnWrmsr(vcpu, (uint)exit.Flags, exit.Data);
                return true;
            case VcpuExitKind.MsrRead when IsAsyncPfMsr(exit.Flags):
            {
                var s = _vcpus[vcpu.Id];
                vcpu.CompleteMsr(exit.Flags switch { MsrEn => s.EnableMsr, MsrInt => s.IntMsr, _ => 0 });
                return true;
            }
            case VcpuExitKind.Hlt:
                return OnHalt(vcpu);
        }
        return false;
    }

    private void OnWrmsr(Vcpu vcpu, uint msr, ulong value)
    {
        var s = _vcpus[vcpu.Id];
        if (!IsValidWrite(msr, value)) { vcpu.CompleteMsr(0, error: true); return; }   // reserved bits: #GP, as KVM
        switch (msr)
        {
            case MsrInt:
                lock (s.Lock) s.IntMsr = value;
                break;
            case MsrEn:
                lock (s.Lock)
                {
                    var was = s.Enabled;
                    s.EnableMsr = value;
                    if (was && !s.Enabled) DropAll(s);
                }
                break;
            case MsrAck:
                if ((value & 1) != 0) OnAck(s);
                break;
        }
        vcpu.CompleteMsr(0);
    }

    private void DropAll(AsyncPfVcpu s)
    {
        for (var i = 0; i < s.States.Length; i++)
            if (s.States[i] == AsyncPfVcpu.Waiting) _tracker.Unwatch(s.Pages[i]);
        s.DropAll();
        s.Timer?.Disarm();
    }

    private void OnAck(AsyncPfVcpu s)
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
        var s = _vcpus[vcpu.Id];
        if (Policy.Mode == AsyncPfMode.Never || s.Loop is null) return false;
        if (!s.Enabled) { s.SyncNotEnabled++; return false; }
        if ((vcpu.SyncedRegs.Rflags & 0x200) == 0) { s.SyncInterruptsOff++; return false; }   // KVM: interrupts must be allowed
        if (s.Outstanding >= s.Tokens.Length) { s.SyncLimit++; return false; }
        if (!Policy.PaysOff(_path.Source.ExpectedLatency)) { s.SyncPolicy++; return false; }
        if (!s.SendAlways && vcpu.GetSregs().Cs.Dpl != 3) { s.SyncKernelMode++; return false; }   // only user mode, unless SEND_ALWAYS

        int slot;
        lock (s.Lock)
        {
            slot = s.FreeSlot();
            do token = (++s.Counter << 12) | (uint)s.Id; while (token is 0 or uint.MaxValue);   // KVM's format, never 0
            s.Tokens[slot] = token;
            s.Pages[slot] = ulong.MaxValue;      // matched by no page until the #PF is queued: its "ready" cannot overtake it
            s.States[slot] = AsyncPfVcpu.Waiting;
            s.Accepted[slot] = s.Loop.LastExitTimestamp;
            s.Present[slot] = 0;
            s.Outstanding++;
            s.Accepts++;
        }
        if (s.Timer is { IsArmed: false } timer) timer.Arm(_options.ReadyPoll);
        WriteArea(s, KvmPvAsyncPf.FlagsOffset, KvmPvAsyncPf.ReasonPageNotPresent);
        s.Loop.TryPost(VcpuEvent.PageFault(0, token));   // on its own thread: injected before the re-entry, no kick
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
        var s = _vcpus[vcpu];
        lock (s.Lock)
        {
            for (var i = 0; i < s.States.Length; i++)
                if (s.States[i] == AsyncPfVcpu.Waiting && s.Tokens[i] == token) { Queue(s, i); break; }
            DeliverNext(s);
        }
    }

    void IPresentObserver.OnPresent(ulong index)
    {
        foreach (var s in _vcpus) MarkPresent(s, index);
    }

    private void MarkPresent(AsyncPfVcpu s, ulong index)
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

    /// <summary>Under the vCPU's lock: if the guest holds no "page ready", hands it the next one.</summary>
    private void DeliverNext(AsyncPfVcpu s)
    {
        if (s.InFlight >= 0 || s.QueuedReady == 0 || s.Loop is null) return;
        var slot = s.Dequeue();
        s.States[slot] = AsyncPfVcpu.Delivered;
        s.InFlight = slot;
        WriteArea(s, KvmPvAsyncPf.TokenOffset, s.Tokens[slot]);
        s.ReadyPosted = Stopwatch.GetTimestamp();
        s.ReadyDelivered++;
        s.Loop.TryPost(VcpuEvent.Interrupt(s.Vector));   // kicks the vCPU when posted from another thread
    }

    /// <summary>The guest ran out of tasks: wait on this thread for the oldest outstanding page, then let its "page ready" in.</summary>
    private bool OnHalt(Vcpu vcpu)
    {
        var s = _vcpus[vcpu.Id];
        int slot;
        ulong page;
        lock (s.Lock)
        {
            if (s.InFlight >= 0 || s.QueuedReady > 0) { DeliverNext(s); return true; }
            slot = s.OldestWaiting();
            if (slot < 0)
            {
                if (!s.Enabled) return false;
                throw new GuestException($"vCPU {vcpu.Id}: the guest halted with no async page fault outstanding");
            }
            page = s.Pages[slot];
            s.HaltWaits++;
        }
        _path.WaitFor(page);
        MarkPresent(s, page);   // the installer may not have told us yet
        return true;
    }

    private void WriteArea(AsyncPfVcpu s, int offset, uint value)
    {
        var gpa = new GuestAddress(s.AreaGpa + (ulong)offset);
        var region = gpa.Value < _m.System.Size ? _m.System : _m.Ram;
        BinaryPrimitives.WriteUInt32LittleEndian(region.Span(gpa, 4), value);
    }

    public AsyncPfStats Snapshot()
    {
        long Sum(Func<AsyncPfVcpu, long> f) { long t = 0; foreach (var v in _vcpus) lock (v.Lock) t += f(v); return t; }
        return new AsyncPfStats
        {
            NotPresent = Sum(v => v.Accepts), ReadyDelivered = Sum(v => v.ReadyDelivered), SyncNotEnabled = Sum(v => v.SyncNotEnabled),
            SyncInterruptsOff = Sum(v => v.SyncInterruptsOff), SyncKernelMode = Sum(v => v.SyncKernelMode), SyncLimit = Sum(v => v.SyncLimit),
            SyncPolicy = Sum(v => v.SyncPolicy), PresentAtAccept = Sum(v => v.PresentAtAccept), HaltWaits = Sum(v => v.HaltWaits),
            PolicyNotifyCostUs = Policy.NotifyCost.TotalMicroseconds,
        };
    }

    /// <summary>Every completed async fault's timeline (after the run).</summary>
    public IReadOnlyList<AsyncPfRecord> History()
    {
        var all = new List<AsyncPfRecord>();
        foreach (var v in _vcpus) lock (v.Lock) all.AddRange(v.History.AsSpan(0, v.HistoryCount).ToArray());
        return all;
    }

    /// <summary>
    /// vCPU <paramref name="vcpu"/>'s registration and outstanding faults, oldest first (its vCPU stopped), for a
    /// migration or a snapshot: <see cref="Import"/> on the other side carries on with the same tokens.
    /// </summary>
    public AsyncPfVcpuState Export(int vcpu)
    {
        var s = _vcpus[vcpu];
        lock (s.Lock)
        {
            var list = new List<(long, AsyncPfOutstanding)>();
            for (var i = 0; i < s.States.Length; i++)
                if (s.States[i] != AsyncPfVcpu.Free) list.Add((s.Accepted[i], new AsyncPfOutstanding(s.Tokens[i], s.Pages[i], (AsyncPfStage)s.States[i])));
            return new AsyncPfVcpuState(s.EnableMsr, s.IntMsr, s.Counter, list.OrderBy(x => x.Item1).Select(x => x.Item2).ToList());
        }
    }

    /// <summary>
    /// Takes a registration captured elsewhere (<see cref="Export"/>, <see cref="AsyncPfRegisters.Export"/>) on vCPU
    /// <paramref name="vcpu"/>'s own thread, after its loop started and before it runs: the MSRs as the guest wrote
    /// them, the token counter, and each outstanding fault: one whose "page ready" the guest holds stays delivered
    /// (its ACK releases the next); the others are requested here and get their "page ready" once present, in order.
    /// </summary>
    public void Import(int vcpu, AsyncPfVcpuState state)
    {
        var s = _vcpus[vcpu];
        if (state.Outstanding.Count > s.Tokens.Length)
            throw new UsageException($"vCPU {vcpu}: {state.Outstanding.Count} outstanding async page faults, this host allows {s.Tokens.Length}");
        if (!IsValidWrite(MsrEn, state.EnableMsr) || !IsValidWrite(MsrInt, state.InterruptMsr))
            throw new UsageException($"vCPU {vcpu}: the async-PF registration has reserved bits set (EN 0x{state.EnableMsr:x}, INT 0x{state.InterruptMsr:x})");
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
                if (f.Page >= _tracker.Pages) throw new UsageException($"vCPU {vcpu}: async page fault token 0x{f.Token:x} is for page {f.Page}, the guest has {_tracker.Pages}");
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
            var present = _tracker.Watch(page);
            if (!present) present = _path.RequestOnly(page);
            if (present) MarkPresent(s, page);
        }
    }

    /// <summary>Faults still outstanding per vCPU (0 after a clean run).</summary>
    public int OutstandingOn(int vcpu) { var s = _vcpus[vcpu]; lock (s.Lock) return s.Outstanding; }
}
