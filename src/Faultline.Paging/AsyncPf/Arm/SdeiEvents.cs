using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Paging.AsyncPf.Arm;

/// <summary>
/// One PE's SDEI events (Arm DEN0054 v1.1) as the dispatcher keeps them: private events of normal priority only, no
/// nesting, as Gavin Shan's KVM series virtualizes them (seed 004). Each exposed event is registered or not, enabled or
/// not, pending or not, running or not, and unregister-pending while an UNREGISTER waits for its handler to complete;
/// the PE is masked (it starts masked) or not. This type is the state machine and the calls' error returns only; what
/// entering a handler means for a vCPU's registers is <see cref="SdeiHost"/>'s. Not thread-safe: the vCPU's thread owns it.
/// </summary>
public sealed class SdeiEvents
{
    private readonly uint[] _numbers;
    private readonly bool[] _registered, _enabled, _pending, _unregisterPending;
    private readonly ulong[] _entry, _arg;

    /// <param name="numbers">The event numbers this PE exposes; 0 (the software-signalled event) is always one.</param>
    public SdeiEvents(ReadOnlySpan<uint> numbers)
    {
        var n = numbers.Length + (numbers.Contains(SoftwareSignaledEvent) ? 0 : 1);
        _numbers = new uint[n];
        _numbers[0] = SoftwareSignaledEvent;
        var i = 1;
        foreach (var e in numbers) if (e != SoftwareSignaledEvent) _numbers[i++] = e;
        _registered = new bool[n]; _enabled = new bool[n]; _pending = new bool[n]; _unregisterPending = new bool[n];
        _entry = new ulong[n]; _arg = new ulong[n];
    }

    /// <summary>Whether the PE is masked (PE_MASK; the state after reset): no event is dispatched to it.</summary>
    public bool Masked { get; private set; } = true;
    /// <summary>The slot of the event whose handler runs, or -1.</summary>
    public int Running { get; private set; } = -1;
    public int Count => _numbers.Length;
    public uint NumberOf(int slot) => _numbers[slot];
    public ulong EntryOf(int slot) => _entry[slot];
    public ulong ArgOf(int slot) => _arg[slot];
    public bool IsRegistered(int slot) => _registered[slot];
    public bool IsEnabled(int slot) => _enabled[slot];
    public bool IsPending(int slot) => _pending[slot];
    public bool IsUnregisterPending(int slot) => _unregisterPending[slot];

    /// <summary>The slot of event <paramref name="number"/>, or -1 if this PE does not expose it.</summary>
    public int SlotOf(ulong number)
    {
        for (var i = 0; i < _numbers.Length; i++) if (_numbers[i] == number) return i;
        return -1;
    }

    /// <summary>Gives slot <paramref name="slot"/> (not the software event's) another number: the VMM's SET_SDEI, before the guest registers it.</summary>
    public void Renumber(int slot, uint number)
    {
        if (slot <= 0 || _registered[slot] || _unregisterPending[slot]) throw new InvalidOperationException("only an unregistered event of the VMM's can be renumbered");
        if (number == SoftwareSignaledEvent || (SlotOf(number) is var at && at >= 0 && at != slot)) throw new UsageException($"SDEI event 0x{number:x} is taken on this vCPU");
        _numbers[slot] = number;
    }

    /// <summary>Whether event <paramref name="slot"/> would be dispatched now if signalled (registered, enabled, PE unmasked, no handler running).</summary>
    public bool CanDispatch(int slot) => !Masked && Running < 0 && _registered[slot] && _enabled[slot] && !_unregisterPending[slot];

    public long Register(ulong number, ulong entry, ulong arg, ulong flags)
    {
        var s = SlotOf(number);
        if (s < 0 || (flags & ~1UL) != 0) return SdeiInvalidParameters;    // flags: bit 0 routing mode, nothing else
        if (_registered[s] || _unregisterPending[s]) return SdeiDenied;
        _registered[s] = true; _enabled[s] = false; _pending[s] = false;
        _entry[s] = entry; _arg[s] = arg;
        return SdeiSuccess;
    }

    public long Enable(ulong number) => SetEnabled(number, true);
    public long Disable(ulong number) => SetEnabled(number, false);

    private long SetEnabled(ulong number, bool on)
    {
        var s = SlotOf(number);
        if (s < 0) return SdeiInvalidParameters;
        if (!_registered[s] || _unregisterPending[s]) return SdeiDenied;
        _enabled[s] = on;
        return SdeiSuccess;
    }

    /// <summary>UNREGISTER: done at once, or PENDING while its handler runs (then done at COMPLETE).</summary>
    public long Unregister(ulong number)
    {
        var s = SlotOf(number);
        if (s < 0) return SdeiInvalidParameters;
        if (!_registered[s] || _unregisterPending[s]) return SdeiDenied;
        if (Running == s) { _unregisterPending[s] = true; return SdeiPending; }
        Forget(s);
        return SdeiSuccess;
    }

    private void Forget(int s)
    {
        _registered[s] = _enabled[s] = _pending[s] = _unregisterPending[s] = false;
        _entry[s] = _arg[s] = 0;
    }

    public long Status(ulong number)
    {
        var s = SlotOf(number);
        if (s < 0) return SdeiInvalidParameters;
        var r = 0UL;
        if (_registered[s] || _unregisterPending[s]) r |= StatusRegistered;
        if (_enabled[s]) r |= StatusEnabled;
        if (Running == s) r |= StatusRunning;
        return (long)r;
    }

    public long GetInfo(ulong number, ulong info)
    {
        var s = SlotOf(number);
        if (s < 0) return SdeiInvalidParameters;
        return info switch
        {
            InfoType => 0,                                           // private
            InfoSignaled => _numbers[s] == SoftwareSignaledEvent ? 1 : 0,
            InfoPriority => 0,                                       // normal
            _ => SdeiInvalidParameters,                              // routing mode/affinity: shared events only
        };
    }

    public long Mask() { Masked = true; return SdeiSuccess; }

    public long Unmask() { Masked = false; return SdeiSuccess; }

    /// <summary>PRIVATE_RESET: every private event unregistered (a running one at its COMPLETE); the PE stays as masked as it was.</summary>
    public long PrivateReset()
    {
        for (var s = 0; s < _numbers.Length; s++)
        {
            if (!_registered[s]) continue;
            if (Running == s) _unregisterPending[s] = true;
            else Forget(s);
        }
        return SdeiSuccess;
    }

    /// <summary>SHARED_RESET: this dispatcher has no shared events.</summary>
    public static long SharedReset() => SdeiSuccess;

    /// <summary>Marks event <paramref name="number"/> pending (a host signal or EVENT_SIGNAL). DENIED unless registered.</summary>
    public long Signal(ulong number)
    {
        var s = SlotOf(number);
        if (s < 0) return SdeiInvalidParameters;
        if (!_registered[s] || _unregisterPending[s]) return SdeiDenied;
        _pending[s] = true;
        return SdeiSuccess;
    }

    /// <summary>The pending event to dispatch now, if any: it becomes running and not pending. -1 if none can be.</summary>
    public int TakeDispatchable()
    {
        if (Masked || Running >= 0) return -1;
        for (var s = 0; s < _numbers.Length; s++)
            if (_pending[s] && _registered[s] && _enabled[s] && !_unregisterPending[s])
            {
                _pending[s] = false;
                Running = s;
                return s;
            }
        return -1;
    }

    /// <summary>COMPLETE or COMPLETE_AND_RESUME: DENIED with no handler running; else the handler ends (and a pending unregister is done).</summary>
    public long Complete(out int completed)
    {
        completed = Running;
        if (Running < 0) return SdeiDenied;
        if (_unregisterPending[Running]) Forget(Running);
        Running = -1;
        return SdeiSuccess;
    }

    /// <summary>What the VMM carries across a migration (GET/SET): registrations, enables, pending, mask; no handler may be running.</summary>
    public SdeiState Capture()
    {
        var events = new SdeiEventState[_numbers.Length];
        for (var s = 0; s < events.Length; s++) events[s] = new SdeiEventState(_numbers[s], _registered[s], _enabled[s], _pending[s], _entry[s], _arg[s]);
        return new SdeiState(Masked, events);
    }

    public void Restore(SdeiState state)
    {
        if (Running >= 0) throw new InvalidOperationException("an SDEI handler is running: restore only a stopped PE");
        foreach (var e in state.Events)
        {
            var s = SlotOf(e.Number);
            if (s < 0) throw new UsageException($"SDEI event 0x{e.Number:x} is not exposed on this vCPU");
            _registered[s] = e.Registered; _enabled[s] = e.Enabled; _pending[s] = e.Pending; _unregisterPending[s] = false;
            _entry[s] = e.Entry; _arg[s] = e.Arg;
        }
        Masked = state.Masked;
    }
}

/// <summary>One event's registration as the VMM reads and writes it.</summary>
public readonly record struct SdeiEventState(uint Number, bool Registered, bool Enabled, bool Pending, ulong Entry, ulong Arg);

/// <summary>A PE's SDEI state as the VMM reads and writes it.</summary>
public sealed record SdeiState(bool Masked, IReadOnlyList<SdeiEventState> Events);
