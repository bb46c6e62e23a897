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
        // beside the snapshot checks: the engine choice (detecting the host builds a probe VM); the VM is created before
        // the engine is chosen and before the guest code is needed (kept with the snapshot, or assembled meanwhile)
        var choice = Task.Run(() => RestoreEngine.Choose(o.Engine));
        OpenedSnapshot snapOpened;
        try { snapOpened = OpenedSnapshot.Open(directory); }
        catch
        {
            Task.WaitAny(choice);   // nothing of the probe stays behind
            throw;
        }
        using var snap = snapOpened;
        var checkedTs = Stopwatch.GetTimestamp();
        var assembly = snap.SavedImage is { } saved ? Task.FromResult((Image: saved, At: checkedTs))
            : Task.Run(() => (Image: new GuestImage(snap.Manifest.Vcpus), At: Stopwatch.GetTimestamp()));
        using var guest = new RestoreGuest(snap.Manifest.Vcpus);   // its threads are spawned now and wait for the VM
        try { return Run(snap, o, progress, guest, choice, assembly, start, checkedTs); }
        finally { Task.WaitAll([choice.ContinueWith(_ => { }, TaskScheduler.Default), assembly.ContinueWith(_ => { }, TaskScheduler.Default)]); }   // none outlives the restore
    }

    private static RestoreReport Run(OpenedSnapshot snap, RestoreOptions o, Action<RestoreProgress>? progress, RestoreGuest guest,
        Task<(PagingMode Engine, string Reason)> choice, Task<(GuestImage Image, long At)> assembly, long start, long checkedTs)
    {
        var m = snap.Manifest;
        // the backing is known without the host's details (auto picks for anonymous memory), so the VM need not wait for them
        var backing = RestoreEngine.BackingOf(o.Engine ?? PagingMode.Exits);
        using var machine = GuestMachine.Create(new MachineConfig(m.Vcpus, m.RamBytes, backing), () => assembly.GetAwaiter().GetResult().Image);
        var machineTs = Stopwatch.GetTimestamp();
        var (engineMode, engineReason) = choice.GetAwaiter().GetResult();
        if (RestoreEngine.BackingOf(engineMode) != backing) throw new InvalidOperationException($"engine {engineMode.Name()} needs another backing than {backing}");
        var lazy = engineMode != PagingMode.None;
        var replay = lazy && o.Replay ? WorkingSet.Read(snap.Files.WorkingSet, m.Pages) : [];
        GuestImageHash.CheckRan(snap, machine);
        var recording = lazy && o.Record && replay.Length == 0 && !File.Exists(snap.Files.WorkingSet);
        var source = new SnapshotPageSource(snap, recordTouches: recording || replay.Length > 0);
        using var engine = EngineFactory.Create(new PagingOptions(engineMode, backing, Readers: m.Vcpus) { PrefillPageCache = false });
        engine.Start(machine, source);
        var engineTs = Stopwatch.GetTimestamp();
        using var fill = lazy && o.Fill ? new BackgroundFill(snap, source, engine.Sink, replay) : null;
        try
        {
            return Drive(snap, o, progress, guest, machine, engine, source, fill, replay, recording, start,
                new RestoreStartup(Ms(start, checkedTs), Ms(start, assembly.Result.At), snap.SavedImage is not null, Ms(start, machineTs), Ms(start, engineTs)), engineReason);
        }
        finally { guest.Stop(); }   // before the fill, the engine and the machine go
    }

    /// <summary>Starts the vCPUs (and the fill), waits for the guest to verify its memory and the rest to be resident, and reports.</summary>
    private static RestoreReport Drive(OpenedSnapshot snap, RestoreOptions o, Action<RestoreProgress>? progress, RestoreGuest guest, GuestMachine machine,
        IPagingEngine engine, SnapshotPageSource source, BackgroundFill? fill, uint[] replay, bool recording, long start, RestoreStartup startup, string engineReason)
    {
        var m = snap.Manifest;
        var engineMode = engine.Options.Mode;
        var lazy = engineMode != PagingMode.None;
        // the fill (the working set first, when there is one to replay) starts once the first vCPU runs: sooner it would
        // take a CPU from the vCPUs' start (this host has two); recording: it waits until the guest is done, so that
        // every first touch is a fault and gets recorded
        guest.Start(machine, engine, snap.States);
        if (fill is not null && !recording)
        {
            guest.WaitForFirstRun(o.Timeout);
            fill.Start();
        }
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
        var exitEngine = engineMode is PagingMode.Exits or PagingMode.Bitmap;
        double Ms(long ts) => SnapshotRestorer.Ms(start, ts);
        return new RestoreReport
        {
            Directory = snap.Files.Directory, Engine = engineMode, EngineReason = engineReason, Mechanism = stats.Mechanism, Vcpus = m.Vcpus, RamBytes = m.RamBytes,
            Pages = m.Pages, DataPages = m.DataPages,
            FirstInstructionMs = Ms(guest.FirstRunTimestamp),
            Startup = startup,
            ResidentMs = Ms(residentTs), GuestDoneMs = Ms(doneTs),
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
            VcpuSleptMs = guest.SleptNs.Sum() / 1e6,
        };
    }

    private static double Ms(long start, long ts) => ts == 0 ? 0 : Stopwatch.GetElapsedTime(start, ts).TotalMilliseconds;

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
