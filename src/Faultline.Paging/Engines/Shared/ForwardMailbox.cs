using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;

namespace Faultline.Paging.Engines.Shared;

/// <summary>
/// THREAD_ID forwarding (HOST.md, "Getting the GPA at CPL3"): a reader of a blocking userfaultfd learns the faulting
/// thread, leaves the address in that vCPU's slot and kicks it; KVM_RUN returns -EINTR with the page still missing,
/// and the vCPU thread resolves it itself (<see cref="ExitResolver"/>). A kick that does not bring the vCPU out within
/// 100 ms (at CPL0 here a signal does not interrupt a vCPU blocked in the userfaultfd wait) is rescued by the reader,
/// and after three rescues forwarding stops: detected at run time, said in the engine's mechanism line.
/// </summary>
internal sealed class ForwardMailbox
{
    private readonly GuestMachine _m;
    private readonly long[] _slot;        // per vCPU: forwarded GPA + 1
    private readonly long[] _since;
    private readonly bool[] _forwardable;
    private int _rescues;
    private volatile bool _kickIneffective;

    public ForwardMailbox(GuestMachine m)
    {
        _m = m;
        var n = m.Config.Vcpus;
        _slot = new long[n]; _since = new long[n]; _forwardable = new bool[n];
    }

    public bool KickIneffective => _kickIneffective;
    public bool AnyForwardable => _forwardable.Any(f => f);
    public long MemoryBytes => (_slot.Length + _since.Length) * 8L;

    /// <summary>
    /// Forward faults only from vCPUs that start at CPL3: on kvm_pvm a signal does not interrupt a vCPU blocked in the
    /// userfaultfd at CPL0 (it spins in the kernel instead), so there the readers resolve vCPU faults too.
    /// </summary>
    public void OnVcpuThreadStart(Vcpu vcpu) => _forwardable[vcpu.Id] = (vcpu.GetSregs().Cs.Selector & 3) == 3;

    /// <summary>Reader: hands the fault to its vCPU if that thread can take it; false = resolve it here.</summary>
    public bool TryForward(int threadId, GuestAddress gpa)
    {
        if (_kickIneffective) return false;
        var vcpus = _m.Vcpus;
        for (var i = 0; i < vcpus.Count; i++)
        {
            var v = vcpus[i];
            if (v.ThreadId != threadId) continue;
            if (!_forwardable[v.Id]) return false;
            Volatile.Write(ref _since[v.Id], Stopwatch.GetTimestamp());
            Volatile.Write(ref _slot[v.Id], (long)gpa.Value + 1);
            v.Kick();
            return true;
        }
        return false;
    }

    /// <summary>vCPU thread, at an Interrupted exit: the address a reader forwarded, if any.</summary>
    public bool TryTake(int vcpu, out ulong gpa)
    {
        var m = Interlocked.Exchange(ref _slot[vcpu], 0);
        gpa = m == 0 ? 0 : (ulong)m - 1;
        return m != 0;
    }

    /// <summary>Reader, between messages: takes back forwards whose kick did not arrive within 100 ms (to resolve them itself).</summary>
    public int TakeStale(Span<ulong> gpas)
    {
        var now = Stopwatch.GetTimestamp();
        var n = 0;
        for (var i = 0; i < _slot.Length && n < gpas.Length; i++)
        {
            var m = Volatile.Read(ref _slot[i]);
            if (m == 0 || Stopwatch.GetElapsedTime(Volatile.Read(ref _since[i]), now) < TimeSpan.FromMilliseconds(100)) continue;
            if (Interlocked.CompareExchange(ref _slot[i], 0, m) != m) continue;
            if (Interlocked.Increment(ref _rescues) >= 3) _kickIneffective = true;
            gpas[n++] = (ulong)m - 1;
        }
        return n;
    }

    public string Describe() =>
        (_kickIneffective ? " (kicks did not interrupt blocked vCPUs: readers resolved them)" : "")
        + (!AnyForwardable ? " (guest at CPL0: readers resolve vCPU faults, a kick cannot interrupt the uffd wait there)" : "");
}
