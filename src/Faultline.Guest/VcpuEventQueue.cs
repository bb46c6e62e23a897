namespace Faultline.Guest;

/// <summary>
/// A bounded, lock-free, allocation-free queue of <see cref="VcpuEvent"/>s: any number of posting threads, one consumer
/// (the vCPU's loop). Dmitry Vyukov's bounded queue: each slot carries a sequence number that says whether it is free
/// for the producer at that position or filled for the consumer. A full queue refuses the event instead of waiting.
/// </summary>
public sealed class VcpuEventQueue
{
    private struct Slot
    {
        public long Sequence;
        public VcpuEvent Event;
    }

    private readonly Slot[] _slots;
    private readonly long _mask;
    private long _tail;   // next position a producer claims (CAS)
    private long _head;   // next position the consumer reads (consumer only)

    /// <param name="capacity">A power of two, at least 2.</param>
    public VcpuEventQueue(int capacity = 64)
    {
        if (capacity < 2 || (capacity & (capacity - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "a power of two, at least 2");
        _slots = new Slot[capacity];
        _mask = capacity - 1;
        for (var i = 0; i < capacity; i++) _slots[i].Sequence = i;
    }

    public int Capacity => _slots.Length;

    /// <summary>Events posted and not yet taken (a snapshot: producers may be mid-post).</summary>
    public int Count => (int)Math.Max(0, Volatile.Read(ref _tail) - Volatile.Read(ref _head));

    /// <summary>Adds an event; false when the queue is full. Any thread.</summary>
    public bool TryEnqueue(in VcpuEvent e)
    {
        while (true)
        {
            var pos = Volatile.Read(ref _tail);
            ref var slot = ref _slots[pos & _mask];
            var dif = Volatile.Read(ref slot.Sequence) - pos;
            if (dif == 0)
            {
                if (Interlocked.CompareExchange(ref _tail, pos + 1, pos) != pos) continue;   // another producer took it
                slot.Event = e;
                Volatile.Write(ref slot.Sequence, pos + 1);   // publish: the consumer may read it now
                return true;
            }
            if (dif < 0) return false;   // the slot still holds an event from one lap ago: full
        }
    }

    /// <summary>The oldest event, left in the queue; false when none is published. Consumer thread only.</summary>
    public bool TryPeek(out VcpuEvent e)
    {
        var pos = _head;
        ref var slot = ref _slots[pos & _mask];
        if (Volatile.Read(ref slot.Sequence) != pos + 1) { e = default; return false; }
        e = slot.Event;
        return true;
    }

    /// <summary>Takes the oldest event; false when none is published. Consumer thread only.</summary>
    public bool TryDequeue(out VcpuEvent e)
    {
        if (!TryPeek(out e)) return false;
        var pos = _head;
        Volatile.Write(ref _slots[pos & _mask].Sequence, pos + _mask + 1);   // free for the producer one lap on
        Volatile.Write(ref _head, pos + 1);
        return true;
    }
}
