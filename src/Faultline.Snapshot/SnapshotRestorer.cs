using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Engines;

namespace Faultline.Snapshot;

/// <summary>Live counters of a running restore, for a progress bar.</summary>
public readonly record struct RestoreProgress(long Present, ulong Pages, long Demanded);

/// <summary>
/// <c>snapshot restore</c>: opens and checks the snapshot (nothing is built if it is bad), builds the VM, starts the
/// engine with the snapshot as its page source and the vCPUs at once with their saved state; the background fill makes
/// the rest resident meanwhile (replaying the recorded working set first). With <see cref="PagingMode.None"/> it is the
/// eager restore: every page read and installed before the first instruction. Teardown stops the vCPUs, the fill, the
/// engine, then the VM and its memory.
/// </summary>
public static class SnapshotRestorer
{
    public static RestoreReport Restore(string directory, RestoreOptions o, Action<RestoreProgress>? progress = null)
    {
        var start = o.StartTimestamp != 0 ? o.StartTimestamp : Stopwatch.GetTimestamp();
        // the guest code is assembled (Iced, tens of ms in a fresh process) while the snapshot is read and checked
        var assembly = Task.Run(() => new GuestImage(1));
        OpenedSnapshot snapOpened;
        try { snapOpened = OpenedSnapshot.Open(directory); }
        catch
        {
            assembly.Wait();
            throw;
        }
        using var snap = snapOpened;
        var m = snap.Manifest;
        var lazy = o.Engine != PagingMode.None;
        var replay = lazy && o.Replay ? WorkingSet.Read(snap.Files.WorkingSet, m.Pages) : [];
        var backing = o.Engine is PagingMode.Minor or PagingMode.MinorBitmap ? Backing.Shmem : Backing.Anonymous;
        using var machine = GuestMachine.Create(new MachineConfig(m.Vcpus, m.RamBytes, backing), assembly.Result.ForVcpus(m.Vcpus));
        var image = GuestImageHash.Of(machine);
        if (image != m.ImageCrc)
            throw new SnapshotException($"{snap.Files.Manifest}: the snapshot ran guest image crc32c 0x{m.ImageCrc:x8}, this build generates 0x{image:x8}: restore it with the build that saved it");
        var recording = lazy && o.Record && replay.Length == 0 && !File.Exists(snap.Files.WorkingSet);
        var source = new SnapshotPageSource(snap, recordTouches: recording || replay.Length > 0);
        using var engine = EngineFactory.Create(new PagingOptions(o.Engine, backing, Readers: m.Vcpus) { PrefillPageCache = false });
        engine.Start(machine, source);
        using var fill = lazy && o.Fill ? new BackgroundFill(snap, source, engine.Sink, replay) : null;
        using var guest = new RestoreGuest(machine, engine, snap.States);
        // recording: the fill waits until the guest is done, so that every first touch is a fault and gets recorded;
        // replaying: the fill starts before the vCPUs, so the working set streams in while they start; otherwise after
        if (replay.Length > 0) fill?.Start();
        guest.Start();
        if (replay.Length == 0 && !recording) fill?.Start();
        var tracker = engine.Tracker;
        var lastProgress = Stopwatch.GetTimestamp();
        long residentTs = lazy ? 0 : start, doneTs;
        bool Stop()
        {
            if (residentTs == 0 && tracker.Complete) residentTs = Stopwatch.GetTimestamp();
            if (progress is not null && Stopwatch.GetElapsedTime(lastProgress).TotalMilliseconds >= 100)
            {
                lastProgress = Stopwatch.GetTimestamp();
                progress(new RestoreProgress(tracker.PresentCount, m.Pages, source.Demanded));
            }
            return source.Failure is not null || guest.Error is not null || fill?.Error is not null;
        }
        var finished = guest.Wait(o.Timeout, Stop);
        doneTs = Stopwatch.GetTimestamp();
        if (!finished) guest.Stop();
        if (finished && fill is not null)
        {
            if (recording) fill.Start();
            while (!fill.Finished && !Stop()) Thread.Sleep(1);   // the guest is done: let the fill make the rest resident
        }
        fill?.Dispose();
        if (residentTs == 0 && tracker.Complete) residentTs = fill?.DoneTimestamp is > 0 ? Math.Min(fill.DoneTimestamp, Stopwatch.GetTimestamp()) : Stopwatch.GetTimestamp();
        if (source.Failure is { } bad) throw bad;
        if (fill?.Error is { } fe) throw fe as FaultlineException ?? new SnapshotException($"background fill failed: {fe.Message}");
        if (guest.Error is { } ge) throw ge;
        if (!guest.Completed.All(c => c)) throw new GuestException("a restored vCPU stopped before it had verified its memory");
        progress?.Invoke(new RestoreProgress(tracker.PresentCount, m.Pages, source.Demanded));
        o.Inspect?.Invoke(machine);

        var recorded = false;
        if (recording)
        {
            WorkingSet.Write(snap.Files.WorkingSet, source.Touches, m.Pages);
            recorded = true;
        }
        var stats = engine.Snapshot();
        var exitEngine = o.Engine is PagingMode.Exits or PagingMode.Bitmap;
        double Ms(long ts) => ts == 0 ? 0 : Stopwatch.GetElapsedTime(start, ts).TotalMilliseconds;
        return new RestoreReport
        {
            Directory = directory, Engine = o.Engine, Mechanism = stats.Mechanism, Vcpus = m.Vcpus, RamBytes = m.RamBytes,
            Pages = m.Pages, DataPages = m.DataPages,
            FirstInstructionMs = Ms(guest.FirstRunTimestamp), ResidentMs = Ms(residentTs), GuestDoneMs = Ms(doneTs),
            WorkingSetMs = fill is { ReplayDoneTimestamp: > 0 } ? Ms(fill.ReplayDoneTimestamp) : 0,
            PagesDemand = source.DemandReads, PagesDemandZero = source.DemandZeros,
            PagesPrefetched = lazy ? fill?.PrefetchedData ?? 0 : (long)m.DataPages, PagesZero = (long)snap.Index.ZeroPages,
            WorkingSetPages = replay.Length, FaultsAvoidedByReplay = Avoided(replay, source.Touches, m.Pages),
            Replayed = replay.Length > 0, Recorded = recorded,
            FaultLatency = exitEngine ? guest.FaultLatency.Summarize() : source.ServiceLatency.Summarize(),
            FaultLatencyAt = exitEngine ? "vcpu" : "source",
            GuestMismatches = guest.Mismatches.Aggregate(0UL, (a, b) => a + b),
            FillGrows = fill?.Grows ?? 0, FillShrinks = fill?.Shrinks ?? 0, FillLargestChunk = fill?.LargestChunk ?? 0,
            FaultPathAllocatedBytes = stats.FaultPathAllocatedBytes,
        };
    }

    /// <summary>Pages of the replayed working set that no fault had to ask for.</summary>
    private static long Avoided(uint[] replay, ReadOnlySpan<uint> touches, ulong pages)
    {
        if (replay.Length == 0) return 0;
        var inSet = new bool[pages];
        foreach (var p in replay) inSet[p] = true;
        long demandedInSet = 0;
        foreach (var p in touches) if (inSet[p]) { demandedInSet++; inSet[p] = false; }
        return replay.Distinct().LongCount() - demandedInSet;
    }
}
