using System.Diagnostics;
using Faultline.Kvm;

namespace Faultline.Guest;

/// <summary>
/// The one loop every vCPU thread runs. <see cref="Run"/> binds the vCPU to the calling thread, starts the exit handler
/// and the hooks, then until a hook finishes or <see cref="RequestStop"/> is seen: stop check, <see cref="IVcpuHooks.BeforeRun"/>,
/// inject what was posted, KVM_RUN, and hand the exit out: guest calls to the hooks (fail() and guest exceptions
/// become a <see cref="GuestException"/>), every other exit to the <see cref="IExitHandler"/> first; Interrupted exits
/// (kicks) are absorbed; anything left is an unexpected exit, reported with the vCPU's RIP.
/// <para>Events are posted from any thread (<see cref="TryPost"/>: a lock-free ring, and a kick when the poster is not
/// the vCPU thread) and always injected on the vCPU's own thread, before a KVM_RUN, one event per entry: an exception
/// with KVM_SET_VCPU_EVENTS (pending, with its payload), an interrupt with KVM_INTERRUPT. An interrupt, and an exception
/// posted <see cref="VcpuEvent.WhenInterruptible"/>, go in only when the last exit said the guest can take one
/// (ready_for_interrupt_injection and IF); otherwise the loop sets request_interrupt_window and injects at
/// KVM_EXIT_IRQ_WINDOW_OPEN. Until an exit shows the guest ran past an injection (any exit but a kick's EINTR or a
/// memory fault, which may come before or during the delivery), the next injection first checks with
/// KVM_GET_VCPU_EVENTS that nothing is still in flight. Nothing here allocates per exit.</para>
/// </summary>
public sealed class VcpuLoop
{
    private readonly IVcpuHooks _hooks;
    private readonly VcpuEventQueue _events;
    private volatile bool _stop;
    private volatile int _thread;          // managed id of the thread in Run, 0 outside it
    private int _running;
    // events taken from the queue and not injected yet: one of each kind (the vCPU holds one of each at a time)
    private VcpuEvent _exception, _interrupt;
    private bool _hasException, _hasInterrupt;
    // true from an injection until an exit proves the guest ran past its delivery (not a kick's EINTR, which may come
    // before the entry reached the guest, nor a memory fault, which may come from the delivery itself); while true an
    // exception goes in read-modify-write, so that it cannot overwrite one still in flight
    private bool _unsettled;
    private volatile bool _windowRequested;
    private int _inRun;                    // 1 from just before the last look at posted events until KVM_RUN returned

    public VcpuLoop(Vcpu vcpu, IVcpuHooks hooks, IExitHandler? handler = null, int eventCapacity = 64)
    {
        Vcpu = vcpu;
        _hooks = hooks;
        Handler = handler;
        _events = new VcpuEventQueue(eventCapacity);
    }

    public Vcpu Vcpu { get; }
    public IExitHandler? Handler { get; }

    /// <summary>KVM_RUN returns so far (vCPU thread, or after <see cref="Run"/>).</summary>
    public long Exits { get; private set; }
    /// <summary>The last exit, as <see cref="Vcpu.Run"/> decoded it.</summary>
    public VcpuExit LastExit { get; private set; }
    /// <summary><see cref="Stopwatch.GetTimestamp"/> right after the last KVM_RUN returned: the start of that exit's handling.</summary>
    public long LastExitTimestamp { get; private set; }
    public long ExceptionsInjected { get; private set; }
    public long InterruptsInjected { get; private set; }
    /// <summary>Times the loop set request_interrupt_window because an event had to wait for the guest.</summary>
    public long WindowRequests { get; private set; }
    /// <summary>KVM_EXIT_IRQ_WINDOW_OPEN exits the loop took (they end a wait for the window).</summary>
    public long WindowExits { get; private set; }
    /// <summary>Whether request_interrupt_window is set now: an event waits for the guest to enable interrupts.</summary>
    public bool WaitingForWindow => _windowRequested;
    public bool StopRequested => _stop;
    /// <summary>Events posted and not yet taken by the loop.</summary>
    public int PendingEvents => _events.Count;

    /// <summary>
    /// Queues an event for injection before the next KVM_RUN. Any thread. A poster other than the vCPU thread kicks the
    /// vCPU only when it may be inside KVM_RUN: while the vCPU thread is handling an exit the loop picks the event up
    /// before it re-enters, and a kick would only cost one more exit. (The loop marks itself in-run before its last look
    /// at the queue, the poster enqueues before it reads the mark, both with full fences: one of them sees the other.)
    /// False when the queue is full. Allocation-free.
    /// </summary>
    public bool TryPost(in VcpuEvent e)
    {
        if (!_events.TryEnqueue(e)) return false;   // a CAS: a full fence before the read below
        if (Environment.CurrentManagedThreadId != _thread && Volatile.Read(ref _inRun) != 0) { Vcpu.Kick(); Interlocked.Increment(ref _kicksSent); }
        return true;
    }

    /// <summary>Kicks posters sent because the vCPU was (or was about to be) in KVM_RUN.</summary>
    public long KicksSent => Interlocked.Read(ref _kicksSent);
    private long _kicksSent;

    /// <summary>Ends <see cref="Run"/> at the next exit (<see cref="VcpuLoopEnd.Stopped"/>). Any thread; kicks the vCPU from other threads.</summary>
    public void RequestStop()
    {
        _stop = true;
        if (Environment.CurrentManagedThreadId != _thread) Vcpu.Kick();
    }

    /// <summary>Runs the vCPU on the calling thread until a hook finishes or a stop is seen. Throws what the guest or a hook did wrong.</summary>
    public VcpuLoopEnd Run()
    {
        if (Interlocked.Exchange(ref _running, 1) != 0) throw new InvalidOperationException($"vCPU {Vcpu.Id}: its loop is running already");
        _thread = Environment.CurrentManagedThreadId;
        var failed = true;
        try
        {
            Vcpu.BindToCurrentThread();
            Handler?.OnVcpuThreadStart(Vcpu);
            Handler?.OnVcpuLoopStart(this);
            _hooks.OnThreadStart(this);
            _unsettled = true;   // restored or earlier state may hold an event in flight
            var end = Loop();
            failed = false;
            return end;
        }
        finally
        {
            Volatile.Write(ref _inRun, 0);
            try
            {
                try { _hooks.OnThreadStop(this); }
                finally { Handler?.OnVcpuThreadStop(Vcpu); }
            }
            catch (Exception) when (failed) { /* the loop's own error is the one to report */ }
            finally
            {
                if (_windowRequested) { Vcpu.RequestInterruptWindow = false; _windowRequested = false; }
                Vcpu.UnbindThread();
                _thread = 0;
                Volatile.Write(ref _running, 0);
            }
        }
    }

    private VcpuLoopEnd Loop()
    {
        var vcpu = Vcpu;
        while (true)
        {
            if (_stop) return VcpuLoopEnd.Stopped;
            if (_hooks.BeforeRun(this) == VcpuLoopAction.Finish) return VcpuLoopEnd.Finished;
            Interlocked.Exchange(ref _inRun, 1);    // before the last look at the queue (a full fence)
            InjectPending(vcpu);
            var exit = vcpu.Run();
            Volatile.Write(ref _inRun, 0);
            LastExitTimestamp = Stopwatch.GetTimestamp();
            LastExit = exit;
            Exits++;
            if (exit.Kind is not (VcpuExitKind.Interrupted or VcpuExitKind.MemoryFault)) _unsettled = false;
            if (GuestCall.TryDecode(exit, out var call))
            {
                if (OnGuestCall(call) == VcpuLoopAction.Finish) return VcpuLoopEnd.Finished;
                continue;
            }
            if (exit.Kind == VcpuExitKind.IrqWindowOpen && _windowRequested)
            {
                WindowExits++;
                continue;   // the held event goes in at the top, before the next KVM_RUN
            }
            if (Handler is not null && Handler.TryHandleExit(vcpu, exit)) continue;
            if (exit.Kind == VcpuExitKind.Interrupted) continue;   // a kick: the stop flag and posted events are read at the top
            throw Unexpected(vcpu, exit);
        }
    }

    private VcpuLoopAction OnGuestCall(GuestCall call) => call.Op switch
    {
        GuestOp.Done or GuestOp.Report => _hooks.OnGuestCall(this, call),
        GuestOp.Fail => throw new GuestException($"vCPU {Vcpu.Id}: guest reported failure code {call.Value}"),
        GuestOp.Exception => throw DescribeException(Vcpu, call.Value),
        _ => throw new GuestException($"vCPU {Vcpu.Id}: unknown guest call {call.Op}"),
    };

    /// <summary>Before a KVM_RUN, on the vCPU thread: takes posted events and injects what the vCPU can take now.</summary>
    private void InjectPending(Vcpu vcpu)
    {
        while ((!_hasException || !_hasInterrupt) && _events.TryPeek(out var next))
        {
            if (next.Kind == VcpuEventKind.Exception)
            {
                if (_hasException) break;   // FIFO: later events wait behind this exception
                _exception = next;
                _hasException = true;
            }
            else
            {
                if (_hasInterrupt) break;
                _interrupt = next;
                _hasInterrupt = true;
            }
            _events.TryDequeue(out _);
        }

        // the last exit's view: can the guest take an interrupt now (IF set, no shadow, none injected)?
        var interruptible = vcpu.ReadyForInterruptInjection && vcpu.InterruptFlag;
        var injected = false;
        if (_hasException && (interruptible || !_exception.WaitsForInterruptWindow))
        {
            var e = _exception;
            uint? code = e.HasErrorCode ? e.ErrorCode : null;
            ulong? payload = e.HasPayload ? e.Payload : null;
            if (!_unsettled) { vcpu.InjectException(e.Vector, code, payload); injected = true; }          // one ioctl
            else injected = vcpu.TryInjectExceptionPreserving(e.Vector, code, payload);                   // false: an event still in flight
            if (injected)
            {
                _hasException = false;
                _unsettled = true;
                ExceptionsInjected++;
                _hooks.OnInjected(this, e);
            }
        }
        // one event per entry; while an earlier injection is unconfirmed, KVM_GET_VCPU_EVENTS says whether it is still in
        // flight (KVM delivers an injected event at the next entry whatever IF is: it would land in the other's handler)
        if (_hasInterrupt && !injected && interruptible && (!_unsettled || !vcpu.HasEventInFlight()))
        {
            var e = _interrupt;
            vcpu.Interrupt(e.Vector);
            _hasInterrupt = false;
            _unsettled = true;
            InterruptsInjected++;
            _hooks.OnInjected(this, e);
        }
        // anything still waiting: exit as soon as the guest can take an event (after this entry's delivery, once IF is set)
        var wait = _hasException || _hasInterrupt || _events.Count > 0;
        if (wait != _windowRequested)
        {
            vcpu.RequestInterruptWindow = wait;
            _windowRequested = wait;
            if (wait) WindowRequests++;
        }
    }

    /// <summary>A typed error for an exit nobody handled, with the registers that explain it.</summary>
    public static GuestException Unexpected(Vcpu vcpu, in VcpuExit exit)
    {
        var rip = SafeRip(vcpu);
        return new GuestException($"vCPU {vcpu.Id}: unexpected exit: {exit} at rip 0x{rip:x}");
    }

    /// <summary>The guest kernel's exception report (vector; RBX error code, RCX RIP, RDX CR2) as a typed error.</summary>
    public static GuestException DescribeException(Vcpu vcpu, ulong vector)
    {
        var r = vcpu.GetRegs();
        return new GuestException($"vCPU {vcpu.Id}: guest exception #{ExceptionName(vector)} at rip 0x{r.Rcx:x}, error code 0x{r.Rbx:x}, cr2 0x{r.Rdx:x}");
    }

    public static string ExceptionName(ulong v) => v switch
    {
        0 => "DE", 1 => "DB", 2 => "NMI", 3 => "BP", 4 => "OF", 5 => "BR", 6 => "UD", 7 => "NM", 8 => "DF", 10 => "TS", 11 => "NP",
        12 => "SS", 13 => "GP", 14 => "PF", 16 => "MF", 17 => "AC", 18 => "MC", 19 => "XM", _ => $"vector {v}",
    };

    private static ulong SafeRip(Vcpu vcpu)
    {
        try { return vcpu.GetRegs().Rip; } catch (KvmException) { return 0; }
    }
}
