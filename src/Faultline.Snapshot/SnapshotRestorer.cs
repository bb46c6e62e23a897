using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Engines;

namespace Faultline.Snapshot;

/// <summary>Live counters of a running restore, for a progress bar.</summary>
public readonly record struct RestoreProgress(long Present, ulong Pages, long Demanded);

/// <summary>
/// <c>snapshot restore</c>: reads the manifest, then builds the VM beside the other checks (the index, the vCPU state,
/// the kept guest image), starts the engine with the snapshot as its page source and the vCPUs with their saved state
/// once every check has passed; the background fill makes the rest resident meanwhile (replaying the recorded working
/// set first). With <see cref="PagingMode.None"/> it is the eager restore: every page read and installed before the
/// first instruction. Teardown stops the vCPUs, the fill, the engine, then the VM and its memory.
/// <para>Start-up runs on three threads, none from the pool: this one reads the manifest and checks the rest; the vCPU
/// threads, spawned after the manifest and idle until the VM exists, build the VM (vCPU thread 0: its RAM memslot alone
/// takes 1.5–2.5 ms at 4 GiB) and choose the engine (thread 1: detecting the host builds a probe VM), then wait. A
/// snapshot that fails a check is refused before any vCPU is let go: the VM built meanwhile is torn down with the
/// threads.</para>
/// </summary>
public static class SnapshotRestorer
{
    public static RestoreReport Restore(string directory, RestoreOptions o, Action<RestoreProgress>? progress = null)
    {
        var start = o.StartTimestamp != 0 ? o.StartTimestamp : Stopwatch.GetTimestamp();
        var (files, m) = OpenedSnapshot.ReadManifest(directory);
        var manifestTs = Stopwatch.GetTimestamp();
        // the backing is known without the host's details (auto picks for anonymous memory), so the VM need not wait for them
        var backing = RestoreEngine.BackingOf(o.Engine ?? PagingMode.Exits);
        var config = new MachineConfig(m.Vcpus, m.RamBytes, backing);
        // the image: kept with the snapshot (set below once its checksum passed), else assembled beside the VM's
        // creation (on the other start-up thread; a 1-vCPU guest has one, so there the build assembles it)
        var kept = GuestImageHash.IsKept(files, m);
        var assembleAside = !kept && m.Vcpus > 1;
        using var image = new StartupStep<GuestImage>();
        using var machine = new StartupStep<GuestMachine>();
        using var choice = new StartupStep<(PagingMode Engine, string Reason)>();
        void Build() => machine.Run(() => GuestMachine.Create(config, () =>
        {
            o.VmCreated?.Invoke();
            return kept || assembleAside ? image.Result : new GuestImage(m.Vcpus);
        }));
        void Choose()
        {
            choice.Run(() => RestoreEngine.Choose(o.Engine));
            if (assembleAside) image.Run(() => new GuestImage(m.Vcpus));
            if (choice.Succeeded) EngineFactory.Prepare(choice.Result.Engine);   // off the vCPUs' way to KVM_RUN
        }
        var guest = new RestoreGuest(m.Vcpus, [Build, Choose]);
        try
        {
            OpenedSnapshot snapOpened;
            try
            {
                o.BeforeChecks?.Invoke();
                snapOpened = OpenedSnapshot.Open(files, m);
            }
            catch (Exception e)
            {
                image.Fail(e);   // a build waiting for the image gives up and tears its VM down
                throw;
            }
            using var snap = snapOpened;
            var checkedTs = Stopwatch.GetTimestamp();
            if (snap.SavedImage is { } saved) image.TrySet(saved);
            else if (kept) image.Run(() => new GuestImage(m.Vcpus));   // guest.img went between the manifest and the checks
            var startup = new RestoreStartup(Ms(start, checkedTs), 0, snap.SavedImage is not null, 0, 0) { ManifestMs = Ms(start, manifestTs) };
            return Run(snap, o, progress, guest, machine, choice, image, start, startup);
        }
        finally
        {
            image.Fail(new SnapshotException("the restore ended before its VM was built"));   // no-op once set
            guest.Dispose();   // stops the vCPUs and waits for the start-up jobs
            machine.ValueIfSucceeded?.Dispose();   // after the vCPUs: guest RAM goes last
        }
    }

    private static RestoreReport Run(OpenedSnapshot snap, RestoreOptions o, Action<RestoreProgress>? progress, RestoreGuest guest,
        StartupStep<GuestMachine> built, StartupStep<(PagingMode Engine, string Reason)> choice, StartupStep<GuestImage> image, long start, RestoreStartup startup)
    {
        var m = snap.Manifest;
        var machine = built.Result;
        var (engineMode, engineReason) = choice.Result;
        var backing = machine.Config.Backing;
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
                startup with
                {
                    ImageReadyMs = Ms(start, image.Succeeded ? image.Timestamp : built.Timestamp), VmBuiltMs = Ms(start, built.Timestamp),
                    EngineChosenMs = Ms(start, choice.Timestamp), EngineStartedMs = Ms(start, engineTs),
                }, engineReason);
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
