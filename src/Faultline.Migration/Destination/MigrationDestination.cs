using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Threads;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.Engines;

using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Destination;

/// <summary>
/// The receiving end of a post-copy migration: connects to the source (main and urgent channels), builds the same
/// VM from the layout before the source pauses (a VM it can't build is refused then, and the source never stops),
/// resumes the vCPUs the moment their state arrives, and takes pages from both channels until every page is
/// present. Then it confirms, reads the source's summary, lets the guest finish its verification, and reports.
/// Any failure: a one-line <see cref="MigrationException"/> (or the typed error that caused it), with every thread,
/// VM and fd gone.
/// </summary>
public sealed class MigrationDestination(DestinationOptions o)
{
    /// <summary>What a cancelled destination tells its source (an Abort), in any phase.</summary>
    public const string Interrupted = "the destination was interrupted";

    public MigrationReport Run(IProgress<MigrationProgress>? progress = null, CancellationToken ct = default)
    {
        using var failure = new FirstFailure();
        DestinationLink? link = null;
        PeerConnection? main = null, urgent = null;   // until the link is up
        NoGcWindow? noGc = null;
        long prepareNs = 0;
        Exception? prepareError = null;
        DestinationSession? session = null;
        DestinationReceivers? receivers = null;
        var rejoins = new List<RejoinRecord>();
        long bytesOfLostLinks = 0;
        void Build(int vcpus, ulong ramBytes) => session = DestinationSession.Prepare(o, vcpus, ramBytes, failure);
        var baseNice = ThreadPriority.Base;
        if (o.RealTimeDemandPath is { } rt) ThreadPriority.Choose(rt);
        if (o.Trace) DemandTrace.Enable();
        ThreadPriority.UseSlice(o.ThreadSlice);
        if (o.RttProbes is < 1 or > (int)PingMessage.MaxCount) throw new UsageException($"round-trip probes must be within 1..{PingMessage.MaxCount}, not {o.RttProbes}");
        DestinationChecks.Injections(o);
        try
        {
            // ---- prepared incoming (QEMU's -incoming): a destination told the guest's shape builds everything first -----
            if (o.Prepared)
            {
                var t0 = Clock.NowNs();
                try
                {
                    DestinationChecks.Mappable(o, o.ExpectRamBytes!.Value);
                    Build(o.ExpectVcpus!.Value, o.ExpectRamBytes.Value);
                }
                catch (FaultlineException e) { prepareError = e; }   // told to the source below, before it pauses
                prepareNs = Clock.NowNs() - t0;
                // the no-GC region's entry collection now, not inside the setup (measured there: 3–7 ms)
                if (prepareError is null) noGc = new NoGcWindow();
            }

            // from the connection until the vCPUs run, this thread is on the critical path of total_ms: ahead of the
            // source's busy vCPUs (same host) and of anything else the host runs (measured under load: setup 100–200 ms
            // at nice 0, most of it waiting for a CPU after the probe lowered the thread)
            ThreadPriority.SetBase(ThreadPriority.LatencyNice);
            var sourceAddress = o.ResolveSource?.Invoke() ?? o.Source;   // may wait for a source that is still starting
            main = DestinationLink.Open(o, sourceAddress, ChannelRole.Main, o.HandshakeTimeout, ct);
            var hello = main.ExchangeHello(ChannelRole.Main, ChannelRole.Source, 0, o.HandshakeTimeout, o.Security);
            var startNs = Clock.NowNs(); // the source answers once it accepted us: the migration starts
            DemandTrace.Hop(1_000_000, "dst-start");
            urgent = DestinationLink.Open(o, sourceAddress, ChannelRole.Urgent, o.HandshakeTimeout, ct);
            urgent.ExchangeHello(ChannelRole.Urgent, ChannelRole.Source, hello.Nonce, o.HandshakeTimeout, o.Security);
            DemandTrace.Hop(1_000_000, "dst-urgent");
            var rtt = LinkRttProbe.Measure(urgent, o.RttProbes, o.HandshakeTimeout);
            DemandTrace.Hop(1_000_000, "dst-rtt");
            var layout = LayoutMessage.Decode(main.Expect(FrameType.Layout, o.HandshakeTimeout).Payload);
            using var reg = ct.Register(() => failure.Set(new OperationCanceledException("migration cancelled")));
            DemandTrace.Hop(1_000_000, "dst-layout");

            // ---- build everything before the source pauses (unless prepared) -----------------------------------
            try
            {
                if (prepareError is not null) throw prepareError;
                DestinationChecks.Layout(o, layout, hello.Nonce);
                if (session is null) Build((int)layout.Vcpus, layout.RamSize);
                var crc = ImageHash.Crc32C(session!.Machine.System);
                if (crc != layout.ImageCrc)
                    throw new MigrationException($"layout mismatch: the source's guest image (crc 0x{layout.ImageCrc:x8}) differs from this build's (0x{crc:x8})");
                DemandTrace.Hop(1_000_000, "dst-crc");
                session.Pages.ExpectedLatency = TimeSpan.FromMicroseconds(rtt.P90);
                session.Enter(MigrationPhase.Connect);
                session.Attach(layout.Nonce, urgent);
            }
            catch (Exception e) when (e is FaultlineException)
            {
                main.TryAbort($"destination cannot take this guest: {e.Message}");
                throw;
            }

            var g = session.Guest; var s = session.Pages; var en = session.Engine; var mc = session.Machine;
            var rx = receivers = new DestinationReceivers(o, session, (int)layout.Vcpus, failure);
            // the link broke: past the vCPU state, stop its receivers, then a new connection to the same session
            // (SessionRejoin); before it, the break is the failure
            void Rejoin()
            {
                var cause = link!.Cause!;
                if (!rx.Recoverable) throw cause;
                var lostNs = Clock.NowNs();
                if (rejoins.Count >= o.MaxRejoins)
                    throw new MigrationException($"the link was lost {rejoins.Count + 1} times in post-copy, giving up: {cause.Message}");
                MigrationLog.Rejoining(o.Logger, cause.Message, o.RecoverTimeout.TotalSeconds);
                session.Detach();
                bytesOfLostLinks += link.Bytes;
                link.Dispose();
                link = null;
                var r = SessionRejoin.Connect(o, sourceAddress, session, (uint)rejoins.Count + 1, failure, ct);
                link = new DestinationLink(r.Main, r.Urgent, new StandbyThread("fl-mig-rx-main"), new StandbyThread("fl-mig-rx-urg"));
                link.Main.Channel.ReceiveTimeout = o.IdleTimeout;
                rx.Start(link);
                var again = session.Attach(session.Id, link.Urgent);
                s.CountRerequested(again);
                if (rx.Complete) SendComplete(link.Main);   // the lost link may have lost it
                var rec = new RejoinRecord(cause.Message, Clock.Ms(Clock.NowNs() - lostNs), r.Attempts, again, (long)r.Answer.PagesResent);
                rejoins.Add(rec);
                MigrationLog.RejoinedSource(o.Logger, rec.RecoveryMs, r.Attempts, again);
            }
            // waits for h; a link lost meanwhile is rejoined if it can be (else its cause is the failure)
            void WaitLinked(WaitHandle h, TimeSpan timeout, string what, Func<string>? detail = null)
            {
                while (true)
                {
                    var i = WaitHandle.WaitAny([h, failure.WaitHandle, link!.Lost], timeout);
                    if (i == 0) return;
                    if (i == 1 || failure.IsSet) failure.ThrowIfSet();
                    if (i == 2)
                    {
                        Rejoin();
                        continue;
                    }
                    throw TimedOut(what, timeout, detail);
                }
            }
            void SendComplete(PeerConnection m)
            {
                Span<byte> cb = stackalloc byte[CompleteMessage.Size];
                new CompleteMessage((ulong)en.Tracker.PresentCount, s.Pages).Encode(cb);
                try { m.Send(FrameType.Complete, 0, cb); }
                catch (LinkLostException) when (rx.Recoverable) { /* the receivers see the loss; the rejoin sends it again */ }
            }

            main.Channel.ReceiveTimeout = o.SetupTimeout;
            link = new DestinationLink(main, urgent, session.MainReceiver, session.UrgentReceiver);
            main = urgent = null;   // the link owns them now
            rx.Start(link);

            DemandTrace.Hop(1_000_000, "dst-rx-started");
            // Ready only once the vCPU threads wait for their state: still starting (JIT, the engine's per-thread set-up,
            // the restore path's warm-up), they took a CPU from the source's pause and from this end's own wake-ups
            Wait(g.AllWaiting, failure, o.SetupTimeout, "the destination's vCPU threads did not get ready");
            DemandTrace.Hop(1_000_000, "dst-waiting");
            if (noGc is not { IsOpen: true })
            {
                noGc?.Dispose();
                noGc = new NoGcWindow();
            }
            DemandTrace.Hop(1_000_000, "dst-nogc");
            ThreadPriority.HoldCarriers();   // nothing under SCHED_FIFO inside the downtime
            session.Enter(MigrationPhase.HandOver);
            link.Main.Send(FrameType.Ready, 0, default);

            // ---- the source pauses; vCPUs resume here as soon as their state lands ------------------------------
            WaitLinked(g.AllResumed, o.SetupTimeout, "the source's vCPU state did not arrive");
            session.Enter(MigrationPhase.PostCopy);
            ThreadPriority.ReleaseCarriers();
            noGc.Dispose();
            var resumedNs = g.ResumedNs.Max();
            var runDelayAtResume = g.RunDelayNs();
            Span<byte> rb = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(rb, resumedNs);
            try { link.Main.Send(FrameType.Resumed, 0, rb); }
            catch (LinkLostException) when (rx.Recoverable) { /* rejoined below: a Recover tells the source the guest runs here */ }
            ThreadPriority.SetBase(baseNice);   // from here it only watches
            var lastReport = Stopwatch.GetTimestamp();
            while (!s.IsAllReceived)
            {
                var i = WaitHandle.WaitAny([s.AllReceived, failure.WaitHandle, link.Lost], 100);
                if (i == 1) failure.ThrowIfSet();
                if (i == 2) Rejoin();
                if (progress is not null && Stopwatch.GetElapsedTime(lastReport).TotalMilliseconds >= 100)
                {
                    lastReport = Stopwatch.GetTimestamp();
                    progress.Report(new MigrationProgress("post-copy", en.Tracker.PresentCount, s.Pages, s.DemandPages, s.PushedPages,
                        (en.Options.Mode.HasReaders() ? s.DemandLatency.LastNs : g.FaultLatency.LastNs) / 1000.0));
                }
            }
            var spin = new SpinWait();
            var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 10;
            while (!en.Tracker.Complete)
            {
                failure.ThrowIfSet();
                if (Stopwatch.GetTimestamp() > deadline)
                    throw new MigrationException($"every page arrived but only {en.Tracker.PresentCount} of {s.Pages} are installed");
                spin.SpinOnce(sleep1Threshold: -1);
            }
            var completeNs = Clock.NowNs();
            var runDelayAtComplete = g.RunDelayNs();
            session.Enter(MigrationPhase.Complete);
            g.PostcopyDone();
            rx.MarkComplete();
            SendComplete(link.Main);
            progress?.Report(new MigrationProgress("complete", en.Tracker.PresentCount, s.Pages, s.DemandPages, s.PushedPages, 0));

            WaitLinked(rx.SummaryArrived, o.IdleTimeout, "the source's summary did not arrive");
            var sum = rx.Summary;
            Wait(g.AllFinished, failure, o.GuestTimeout, "the guest did not finish its verification", g.DescribeUnfinished);
            failure.ThrowIfSet();
            var stats = en.Snapshot();
            DemandTrace.Dump("dest");
            var receivedSha = session.Digest.Sha256Hex();
            var readers = en.Options.Mode.HasReaders();
            var blocked = new double[mc.Config.Vcpus];
            for (var i = 0; i < blocked.Length; i++) blocked[i] = (readers ? s.DemandNsByRange[i] : g.BlockedNs[i]) / 1e6;
            return new MigrationReport
            {
                Engine = o.Engine.Name(), EngineMechanism = stats.Mechanism, EngineReason = o.EngineReason, Workload = o.Workload, Vcpus = mc.Config.Vcpus, RamBytes = mc.Ram.Size,
                DowntimeMs = Clock.Ms(resumedNs - rx.PauseNs), TotalMs = Clock.Ms(completeNs - startNs), PostcopyMs = Clock.Ms(completeNs - rx.PauseNs),
                SetupMs = Clock.Ms(rx.PauseNs - startNs), PrepareMs = o.Prepared ? Clock.Ms(prepareNs) : null, GuestFinishedMs = Clock.Ms(g.FinishedNs.Max() - rx.PauseNs),
                PagesTotal = s.Pages, PagesDemand = s.DemandPages, PagesPushed = s.PushedPages, PagesZero = s.ZeroPages,
                PagesDuplicate = s.Duplicates, FramesDamaged = s.DamagedFrames, PagesRerequested = s.PagesRerequested, DemandRequests = s.DemandedPages, DemandFrames = s.DemandFrames,
                PagesToWaiters = s.AnsweredRequests, DemandAlreadyPushed = (long)sum.DemandAlreadySent,
                PushRuns = s.RunFrames, RunPagesToFaultPath = s.RunAnsweredRequests,
                BulkReceiverCpuMs = Clock.Ms(rx.BulkReceiverCpuNs),
                BytesOnWire = bytesOfLostLinks + link.Bytes,
                FaultLatencyUs = readers ? s.DemandLatency.Summarize() : g.FaultLatency.Summarize(),
                DemandLatencyUs = s.DemandLatency.Summarize(),
                WakeLatencyUs = readers ? null : g.WakeLatency.Summarize(),
                FaultWaitsPastWaitTimer = (readers ? s.DemandLatency : g.FaultLatency).CountAtLeast((long)(MigrationReport.WaitTimerMs * 1e6)),
                WaitTimerExpiries = en.Tracker.WaitTimerExpiries, WaitsEndedByTimer = en.Tracker.WaitsEndedByTimer,
                FaultLatencyMeasure = readers
                    ? "uffd reader: page requested → page installed (the kernel's wake-up of the vCPU not included)"
                    : "vCPU thread: KVM_RUN returned with the fault → page installed, vCPU about to re-enter",
                VcpuBlockedMs = blocked, VcpuRunQueueMs = [.. runDelayAtComplete.Select((ns, i) => (ns - runDelayAtResume[i]) / 1e6)],
                SourceSha256 = Convert.ToHexStringLower(sum.SourceSha256), ReceivedSha256 = receivedSha,
                GuestMismatches = g.Mismatches.Aggregate(0UL, (a, b) => a + b),
                EngineInstalled = stats.Installed, InstalledByReceiver = s.InstalledByReceiver,
                Security = o.Security.Describe(link.Main), Link = o.LinkKind, LinkDelayUs = o.LinkDelay.TotalMicroseconds, LinkDelayEmulated = o.LinkDelay > TimeSpan.Zero,
                LinkRttUs = rtt, WaitSpinUs = FaultWait.SpinMicroseconds(s.ExpectedLatency),
                Scheduling = new DemandPathScheduling(ThreadPriority.Policy, ThreadPriority.PolicyDetail, sum.SourcePolicy, o.VcpuPostcopyNice),
                Mixed = o.Mixed is { } mixed ? DestinationChecks.MixedOf(o, mixed, g, en, completeNs) : null,
                Rejoins = [.. rejoins], Injected = o.Inject.IsEmpty ? null : o.Inject.ToString(),
            };
        }
        catch (Exception e)
        {
            var first = failure.Error ?? e;
            var resumed = receivers?.StateArrived == true;
            if (first is OperationCanceledException)
            {
                // said on the way out (bounded: a dead link does not hold the exit): a source that only saw the link
                // close would wait its whole rejoin wait for a session that will not come back
                PeerConnection.TryAbort(Interrupted, link?.Main ?? main, link?.Urgent ?? urgent);
                throw new MigrationFailedException("migration cancelled", MigrationFailure.Of("migration cancelled", session, resumed, rejoins), first);
            }
            // a source that gives up after the pause takes the guest's missing pages with it, whatever it says
            var msg = first is PeerAbortedException pa && resumed ? $"the source is gone: it ended the migration in post-copy ({pa.Reason}); the guest could not be completed"
                : first is FaultlineException ? first.Message : $"internal error: {first.Message}";
            PeerConnection.TryAbort(msg, link?.Main ?? main, link?.Urgent ?? urgent);
            if (first is FaultlineException and not MigrationException) throw first;
            throw new MigrationFailedException(msg, MigrationFailure.Of(msg, session, resumed, rejoins), first);
        }
        finally
        {
            ThreadPriority.SetBase(baseNice);
            ThreadPriority.ReleaseCarriers();
            session?.Pages.Fail(new MigrationException("destination is shutting down"));
            link?.Shutdown();
            main?.Shutdown();
            urgent?.Shutdown();
            session?.Dispose();
            link?.Dispose();
            receivers?.Dispose();   // after the receivers' threads are joined
            noGc?.Dispose();
            main?.Dispose();
            urgent?.Dispose();
        }
    }

    private static void Wait(WaitHandle h, FirstFailure failure, TimeSpan timeout, string what, Func<string>? detail = null)
    {
        var i = WaitHandle.WaitAny([h, failure.WaitHandle], timeout);
        if (i == 1 || failure.IsSet) failure.ThrowIfSet();
        if (i == WaitHandle.WaitTimeout) throw TimedOut(what, timeout, detail);
    }

    private static MigrationException TimedOut(string what, TimeSpan timeout, Func<string>? detail) =>
        new($"{what} within {timeout.TotalSeconds:0.#} s{(detail?.Invoke() is { Length: > 0 } d ? $" ({d})" : "")}");
}
