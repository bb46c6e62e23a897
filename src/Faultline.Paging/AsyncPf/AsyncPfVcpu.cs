using Faultline.Guest;
using Faultline.Kvm;

namespace Faultline.Paging.AsyncPf;

/// <summary>One async fault's timeline, in Stopwatch ticks (0: not reached).</summary>
public readonly record struct AsyncPfRecord(int Vcpu, uint Token, ulong Page, long Accepted, long Present, long ReadyPosted, long Acked);

/// <summary>
/// One vCPU's async-PF state, guarded by its lock: the guest's MSRs, the outstanding faults (a fixed table of
/// <see cref="AsyncPfOptions.Limit"/> slots: token, page, state), the FIFO of faults whose page is present and whose
/// "page ready" waits for the guest's ACK of the previous one, and a record of each completed fault. Allocation-free
/// after construction.
/// </summary>
internal sealed class AsyncPfVcpu
{
    public const byte Free = 0, Waiting = 1, Queued = 2, Delivered = 3;

    public readonly object Lock = new();
    public readonly int Id;
    public VcpuLoop? Loop;
    /// <summary>Armed while faults are outstanding (<see cref="AsyncPfOptions.ReadyPoll"/>); vCPU thread only.</summary>
    public Faultline.Kvm.SelfKickTimer? Timer;
    /// <summary>x86: MSR_KVM_ASYNC_PF_EN and _INT; arm: ENABLE's control word and the configured PPI (vector).</summary>
    public ulong EnableMsr, IntMsr;
    public uint Counter;

    public readonly uint[] Tokens;
    public readonly ulong[] Pages;
    public readonly byte[] States;
    public readonly long[] Accepted, Present;
    public int Outstanding;

    private readonly int[] _fifo;
    private int _head, _count;
    public int InFlight = -1;        // the slot whose "page ready" the guest holds (until ACK), -1 none
    public long ReadyPosted;

    public readonly AsyncPfRecord[] History;
    public int HistoryCount;

    // counters (vCPU thread or under the lock)
    public long Accepts, SyncNotEnabled, SyncInterruptsOff, SyncKernelMode, SyncLimit, SyncPolicy, SyncEventBlocked, Retries, PresentAtAccept, ReadyDelivered, HaltWaits, Acks;

    public AsyncPfVcpu(int id, int limit, int history)
    {
        Id = id;
        Tokens = new uint[limit]; Pages = new ulong[limit]; States = new byte[limit];
        Accepted = new long[limit]; Present = new long[limit];
        _fifo = new int[limit];
        History = new AsyncPfRecord[history];
    }

    /// <summary>The guest's async-PF area (x86) or control block (arm): bits 63:6 of its enable word.</summary>
    public ulong AreaGpa => EnableMsr & ~63UL;
    public int QueuedReady => _count;

    public int FreeSlot()
    {
        for (var i = 0; i < States.Length; i++) if (States[i] == Free) return i;
        return -1;
    }

    public void Enqueue(int slot) { _fifo[(_head + _count) % _fifo.Length] = slot; _count++; }

    public int Dequeue()
    {
        var s = _fifo[_head];
        _head = (_head + 1) % _fifo.Length;
        _count--;
        return s;
    }

    /// <summary>The oldest fault still waiting for its page (the lowest token counter), or -1.</summary>
    public int OldestWaiting()
    {
        var best = -1;
        for (var i = 0; i < States.Length; i++)
            if (States[i] == Waiting && (best < 0 || Accepted[i] < Accepted[best])) best = i;
        return best;
    }

    /// <summary>Forgets every outstanding fault (the guest disabled async PF: KVM drops them too).</summary>
    public void DropAll()
    {
        Array.Clear(States);
        Outstanding = 0;
        _head = _count = 0;
        InFlight = -1;
    }

    public void Record(in AsyncPfRecord r)
    {
        if (HistoryCount < History.Length) History[HistoryCount++] = r;
    }
}
