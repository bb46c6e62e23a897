using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Migration.Reporting;
using Faultline.Paging;

namespace Faultline.Snapshot;

/// <summary>
/// <c>snapshot restore --handler PATH</c>: the restore with its pages served by another process (<c>snapshot serve</c>,
/// or any handler of Firecracker's protocol). Guest RAM is registered with a blocking MISSING userfaultfd, which goes to
/// the handler with the regions JSON; the vCPUs sleep in the userfaultfd on a missing page until the handler copies it.
/// The restoring side watches the handler's socket: if the handler dies (the socket closes), or stays alive but leaves a
/// vCPU waiting for one page longer than <see cref="RestoreOptions.HandlerTimeout"/> (<see cref="HandlerStallWatch"/>),
/// the vCPUs are kicked out of their wait and stopped, and the restore fails with one line instead of hanging; or, with
/// <see cref="HandlerRestart"/>, a new handler takes over and the VM goes on (<see cref="HandlerLink"/>).
/// <para>The handler reads the fault messages, so this side counts what it can see for itself: the pages present after
/// the run (mincore: every one was installed by a handler, split by the index into data and holes) and the vCPUs' time
/// asleep in the kernel (schedstat), which here is their time waiting for the handler.</para>
/// </summary>
public static class HandlerRestore
{
    public static RestoreReport Restore(string directory, string handlerSocket, RestoreOptions o, HandlerRestart? restart = null)
    {
        var start = o.StartTimestamp != 0 ? o.StartTimestamp : Stopwatch.GetTimestamp();
        if (!File.Exists(handlerSocket)) throw new UsageException($"no such socket file: {handlerSocket}");
        using var snap = OpenedSnapshot.Open(directory);
        var m = snap.Manifest;
        using var machine = GuestMachine.Create(new MachineConfig(m.Vcpus, m.RamBytes, Backing.Anonymous), snap.SavedImage);
        GuestImageHash.CheckRan(snap, machine);
        using var uffd = Userfaultfd.Open(UffdFeatures.None);
        uffd.Register(machine.Ram.Host, machine.Ram.Size, UffdRegisterMode.Missing);
        var regions = $"[{{\"base_host_virt_addr\":{machine.Ram.Host.Value},\"size\":{m.RamBytes},\"offset\":0,\"page_size\":{SnapshotFiles.PageSize},\"page_size_kib\":{SnapshotFiles.PageSize}}}]";
        using var link = new HandlerLink(directory, handlerSocket, regions, uffd, machine.Ram.Host, machine.Ram.Size, restart);
        using var guest = new RestoreGuest(m.Vcpus);
        guest.Start(machine, NoExits.Instance, snap.States);
        var stall = new HandlerStallWatch(guest, o.HandlerTimeout);
        bool HandlerGone()
        {
            if (link.CheckLost() || guest.Error is not null) return true;
            return stall.Check() is { } s && link.Stalled(
                $"the page handler at {link.SocketPath} is alive but left vCPU {s.Vcpu} waiting for a page for {s.Waited.TotalSeconds:0.0} s (--handler-timeout {o.HandlerTimeout.TotalSeconds:0} s)");
        }
        var finished = guest.Wait(o.Timeout, HandlerGone);
        var doneTs = Stopwatch.GetTimestamp();
        if (!finished) guest.Stop();   // kicks every vCPU out of its userfaultfd wait (CPL3) and joins them
        if (link.Lost is { } lost) throw new PageUnavailableException(lost);
        if (guest.Error is { } ge) throw ge;
        if (!guest.Completed.All(c => c)) throw new GuestException("a restored vCPU stopped before it had verified its memory");
        o.Inspect?.Invoke(machine);
        var (present, presentZero) = Installed(machine, snap.Index);
        double Ms(long ts) => ts == 0 ? 0 : Stopwatch.GetElapsedTime(start, ts).TotalMilliseconds;
        return new RestoreReport
        {
            Directory = directory, Engine = PagingMode.Missing, Mechanism = $"userfaultfd MISSING served by the handler at {handlerSocket}",
            Vcpus = m.Vcpus, RamBytes = m.RamBytes, Pages = m.Pages, DataPages = m.DataPages,
            FirstInstructionMs = Ms(guest.FirstRunTimestamp), ResidentMs = 0, GuestDoneMs = Ms(doneTs),
            PagesDemand = present - presentZero, PagesDemandZero = presentZero, PagesPrefetched = 0, PagesZero = (long)snap.Index.ZeroPages,
            FaultLatency = new LatencyRecorder(16).Summarize(), FaultLatencyAt = "handler",
            GuestMismatches = guest.Mismatches.Aggregate(0UL, (a, b) => a + b),
            HandlerRestarts = link.Restarts,
            VcpuSleptMs = guest.SleptNs.Sum() / 1e6,
        };
    }

    /// <summary>Guest pages present after the run (all installed by a handler), and how many of them are holes of the snapshot.</summary>
    private static (long Present, long Holes) Installed(GuestMachine machine, PageIndex index)
    {
        var resident = machine.Ram.Residency();
        long present = 0, holes = 0;
        for (var p = 0; p < resident.Length; p++)
        {
            if ((resident[p] & 1) == 0) continue;
            present++;
            if (!index.IsData((ulong)p)) holes++;
        }
        return (present, holes);
    }

    /// <summary>No exit is a page fault here: the vCPUs sleep in the userfaultfd and the handler wakes them.</summary>
    private sealed class NoExits : IExitHandler
    {
        public static readonly NoExits Instance = new();
        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) => false;
    }
}
