using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Threads;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Source;

/// <summary>
/// The sending end of a post-copy migration. <see cref="Create"/> builds and starts the guest; <see cref="Serve"/>
/// accepts one destination and migrates to it:
/// handshake and layout (the guest still runs) → the destination builds its VM and says Ready → pause, capture vCPU
/// state, send it → serve demand requests (urgent channel) while pushing every other page (main channel) → on
/// Complete, hash the paused image and send the summary. Guest RAM is kept until Dispose: a failure at any point
/// loses nothing, and after the pause the guest stays paused (it must not run in two places).
/// </summary>
public sealed class MigrationSource : IDisposable
{
    private readonly SourceOptions _o;
    private readonly SourceGuest _guest;
    private readonly uint _imageCrc;
    private FirstFailure _failure = new();
    private int _disposed;

    /// <summary>Shorter self-kick periods would keep the vCPUs mostly exiting (each timer exit costs the guest ~40 µs here).</summary>
    public static readonly TimeSpan MinSelfKickPeriod = TimeSpan.FromMicroseconds(20);

    public GuestMachine Machine { get; }
    /// <summary>True once the guest has been paused for a migration; it never runs here again.</summary>
    public bool Paused { get; private set; }
    public ulong Pages => Machine.Ram.PageCount;
    /// <summary>Destinations accepted so far (each <see cref="Serve"/> that got past the accept counts one).</summary>
    public int DestinationsAccepted { get; private set; }
    /// <summary>Times the destination of the current session rejoined after a lost connection, and the pages sent again for it.</summary>
    public int Rejoins { get; private set; }
    public long PagesSentAgain { get; private set; }
    /// <summary>Time spent waiting for rejoins, ms.</summary>
    public double RejoinWaitMs { get; private set; }
    /// <summary>vCPU threads whose self-kick timer is armed right now (a pause is imminent).</summary>
    internal int SelfKickTimersArmed => _guest.ArmedTimers;

    private MigrationSource(SourceOptions o, GuestMachine m, TaskKernel? kernel)
    {
        _o = o;
        Machine = m;
        // the generated guest image (slot 0) before any vCPU ran: the CPU later sets accessed/dirty bits in its page tables
        _imageCrc = ImageHash.Crc32C(m.System);
        var perVcpu = m.BytesPerVcpu;
        var write = (ulong)Math.Round(perVcpu / 4096 * Math.Clamp(o.WriteFraction, 0, 1)) * 4096;
        _guest = kernel is null
            ? new SourceGuest(m, o.QwordsPerPage, write, o.SelfKickPeriod, o.Order)
            : new SourceGuest(m, new TaskProgram(m, kernel, o.Mixed!.TaskConfig), IAsyncPfRegistration.For(o.Mixed.Protocol, m, new AsyncPfOptions()), o.SelfKickPeriod);
    }

    /// <summary>Builds the VM (anonymous RAM, CPL3 workload) and starts its vCPUs.</summary>
    public static MigrationSource Create(SourceOptions o)
    {
        if (o.QwordsPerPage is < 1 or > 512) throw new UsageException($"qwords per page must be within 1..512, not {o.QwordsPerPage}");
        if (o.PushRunPages is < 1 or > Wire.MaxRunPages) throw new UsageException($"pages per push frame must be within 1..{Wire.MaxRunPages}, not {o.PushRunPages}");
        if (o.SelfKickPeriod != TimeSpan.Zero && o.SelfKickPeriod < MinSelfKickPeriod)
            throw new UsageException($"a self-kick period must be 0 (off) or at least {MinSelfKickPeriod.TotalMicroseconds:0} µs, not {o.SelfKickPeriod.TotalMicroseconds:0.###} µs");
        o.Mixed?.Validate(o.Vcpus);
        var kernel = o.Mixed?.Kernel(new AsyncPfOptions());
        // nothing is paged on demand here: huge pages make the guest's first pass over its memory (before "listening") cheap
        var m = GuestMachine.Create(new MachineConfig(o.Vcpus, o.RamBytes, Backing.Anonymous) { Kernel = kernel?.Kernel, HugePages = o.HugePages });
        MigrationSource s;
        try { s = new MigrationSource(o, m, kernel); }
        catch { m.Dispose(); throw; }
        Warmup.StatePath(o.Vcpus);
        s._guest.Start();
        return s;
    }

    /// <summary>Waits until every vCPU has completed the configured number of whole passes.</summary>
    public void WaitUntilWarm(CancellationToken ct = default) =>
        _guest.WaitForPasses(_o.PassesBeforeMigration, TimeSpan.FromMinutes(10), ct);

    /// <summary>The image digest (<see cref="PageDigest"/>) of guest RAM as it is now (after the pause: the image the destination must end up with).</summary>
    public string RamSha256() => PageDigest.Of(Machine.Ram).Sha256Hex();

    /// <summary>Accepts one destination on <paramref name="listener"/> and migrates the guest to it.</summary>
    public SourceResult Serve(MigrationListener listener, CancellationToken ct = default)
    {
        if (_o.RealTimeDemandPath is { } rt) ThreadPriority.Choose(rt);
        if (_o.Trace) DemandTrace.Enable();
        ThreadPriority.UseSlice(_o.ThreadSlice);
        WaitUntilWarm(ct);
        _failure.Dispose();
        _failure = new FirstFailure();   // one per session: a new destination starts clean
        Rejoins = 0;
        PagesSentAgain = 0;
        RejoinWaitMs = 0;
        PeerConnection? main = null, urgent = null;
        Thread? pushThread = null, demandThread = null;
        var completeReceived = false;
        var baseNice = ThreadPriority.Base;
        try
        {
            // from the destination's connection until the state is sent this thread is on the critical path (setup,
            // then downtime): ahead of this guest's vCPUs, which keep running meanwhile
            ThreadPriority.SetBase(ThreadPriority.LatencyNice);
            var gate = new PeerGate(listener, _o);
            var nonce = (ulong)Random.Shared.NextInt64() | 1;
            main = gate.Accept(ChannelRole.Main, nonce, _o.AcceptTimeout, ct);
            DestinationsAccepted++;
            using var reg = ct.Register(() => { main?.Shutdown(); urgent?.Shutdown(); });
            urgent = gate.Accept(ChannelRole.Urgent, nonce, _o.HandshakeTimeout, ct);
            DemandTrace.Hop(1_000_000, "src-urgent");
            LinkRttProbe.Answer(urgent, _o.HandshakeTimeout);   // the destination measures the link's round trip
            DemandTrace.Hop(1_000_000, "src-rtt");
            var ram = Machine.Ram;
            Span<byte> lb = stackalloc byte[LayoutMessage.Size];
            new LayoutMessage(Wire.PageSize, (uint)Machine.Config.Vcpus, ram.Base.Value, ram.Size, Backing.Anonymous,
                _imageCrc, nonce, _o.Mixed is null ? GuestProgramKind.Generations : GuestProgramKind.Tasks, _o.Mixed?.MemoryTasks ?? 0,
                _o.Mixed?.Protocol ?? AsyncPfProtocol.X86).Encode(lb);
            main.Send(FrameType.Layout, 0, lb);
            _guest.OpenPauseWindow();   // the destination builds its VM now; Ready (and the pause) may follow at any moment
            // the last vCPU to park sends the state from its own thread (see SourceGuest.Pause), JIT-compiled now
            long pauseTs = 0, stateSentTs = 0;
            var m = main;
            Action<VcpuState[]> sendState = s =>
            {
                m.Send(FrameType.VcpuState, 0, VcpuStateMessage.Encode(Clock.ToNanoseconds(pauseTs), s));
                stateSentTs = Stopwatch.GetTimestamp();
            };
            RuntimeHelpers.PrepareMethod(sendState.Method.MethodHandle);
            using var noGc = new NoGcWindow();
            DemandTrace.Hop(1_000_000, "src-nogc");
            try { main.Expect(FrameType.Ready, _o.SetupTimeout); }
            catch (MigrationException e) { throw new MigrationException($"{e.Message} (before the pause: the source guest was not stopped)"); }
            ThreadPriority.HoldCarriers();   // nothing under SCHED_FIFO inside the downtime

            // ---- pause: downtime starts here -------------------------------------------------------------
            pauseTs = Stopwatch.GetTimestamp();
            Paused = true;
            DemandTrace.Hop(1_000_000, "src-pause");
            var states = _guest.Pause(TimeSpan.FromSeconds(10), sendState);   // returns with the state on the wire
            DemandTrace.Hop(1_000_000, "src-state-sent");
            var pauseStats = _guest.PauseStats();
            ThreadPriority.SetBase(baseNice);
            noGc.Dispose();

            var sent = new SentPages(ram.PageCount);
            long pushCpuNs = 0;
            var pushStart = _o.PushFromResumePoint && _o.Mixed is null
                ? GenerationProgram.ResumePage(states[0].Regs, _o.Order, ram.Base.Value)
                : _o.PushStartPage;
            var pusher = new PagePusher(ram, sent, _o.PrefetchWindowPages, pushStart % ram.PageCount, _o.PushRunPages, _o.PostcopyBandwidth);
            var demand = new DemandServer(ram, sent, pusher);
            var resumed = false;
            // ---- post-copy: serve demands and push until Complete; a lost connection is rejoined (RejoinTimeout) -------
            while (true)
            {
                main.Channel.ReceiveTimeout = _o.IdleTimeout;
                urgent.Channel.ReceiveTimeout = null; // the destination may need nothing for a long time
                var (mc, u) = (main, urgent);
                using var stop = new CancellationTokenSource();
                try
                {
                    demandThread = Worker("fl-mig-demand", () => ThreadPriority.JoinDemandPath(), () =>
                    {
                        try { demand.Run(u, () => Volatile.Read(ref completeReceived)); }
                        finally { ThreadPriority.LeaveDemandPath(); }
                    }, mc, u);
                    Frame f;
                    if (!resumed)
                    {
                        // the push waits for Resumed: started now, it would take the CPUs the destination needs to restore its vCPUs
                        f = ReadMain(main);
                        if (f.Type != FrameType.Resumed) throw new MigrationException($"protocol error: expected Resumed from {main.Peer}, got {f.Type}");
                        resumed = true;
                        ThreadPriority.ReleaseCarriers();
                    }
                    pushThread = Worker("fl-mig-push", () => ThreadPriority.SetBase(ThreadPriority.BulkNice), () =>
                    {
                        pusher.Run(mc, stop.Token);
                        Volatile.Write(ref pushCpuNs, HostThread.CpuTimeNs);
                    }, mc, u);  // the throughput: ahead of a guest sharing the host

                    f = ReadMain(main);
                    if (f.Type != FrameType.Complete) throw new MigrationException($"protocol error: expected Complete from {main.Peer}, got {f.Type}");
                    var c = CompleteMessage.Decode(f.Payload);
                    if (c.PagesPresent != Pages || c.PagesTotal != Pages)
                        throw new MigrationException($"destination reported {c.PagesPresent} of {c.PagesTotal} pages complete, the guest has {Pages}");
                    Volatile.Write(ref completeReceived, true);
                    pushThread.Join();
                    _failure.ThrowIfSet();
                    break;
                }
                catch (LinkLostException lost) when (!_failure.IsSet && _o.RejoinTimeout > TimeSpan.Zero && !ct.IsCancellationRequested)
                {
                    // the guest runs on the destination (or is about to): it must not run here again, and every page stays
                    // here until a Complete. Stop this connection's threads, then wait for the same session to come back.
                    stop.Cancel();
                    main.Shutdown();
                    urgent.Shutdown();
                    pushThread?.Join();
                    demandThread?.Join();
                    pushThread = demandThread = null;
                    _failure.ThrowIfSet();
                    main.Dispose();
                    urgent.Dispose();
                    main = urgent = null;
                    MigrationLog.LinkLost(_o.Logger, lost.Message, _o.RejoinTimeout.TotalSeconds);
                    (main, urgent) = Rejoin(gate, nonce, sent, ct);
                    resumed = true;   // a destination that rejoins runs the guest: it resumed, whether or not its Resumed arrived
                    ThreadPriority.ReleaseCarriers();
                }
            }
            if (!sent.AllSent) throw new MigrationException($"destination confirmed completion but only {sent.SentCount} of {Pages} pages were sent");

            var sha = PageDigest.Of(ram).Sha256();
            Span<byte> sb = stackalloc byte[SummaryMessage.Size];
            var summary = new SummaryMessage(sha, demand.Served, pusher.Pushed, pusher.Zero + demand.Zero, demand.Requests, demand.AlreadySent,
                (ulong)(main.Channel.BytesSent + urgent.Channel.BytesSent + SummaryMessage.Size + Wire.HeaderSize),
                Clock.ToNanoseconds(stateSentTs - pauseTs), ThreadPriority.Policy);
            summary.Encode(sb);
            main.Send(FrameType.Summary, 0, sb);
            main.Flush();
            WaitForClose(main);
            demandThread.Join();
            DemandTrace.Dump("source");
            return new SourceResult(Pages, demand.Served, pusher.Pushed, pusher.Zero + demand.Zero, demand.Requests, demand.AlreadySent,
                main.Channel.BytesSent + urgent.Channel.BytesSent, main.Channel.BytesReceived + urgent.Channel.BytesReceived,
                Convert.ToHexStringLower(sha), pauseStats.VcpuParkedMs.Max(),
                Stopwatch.GetElapsedTime(pauseTs, stateSentTs).TotalMilliseconds, pauseStats)
            {
                PushCpuMs = Clock.Ms(Volatile.Read(ref pushCpuNs)), PostcopyBandwidth = _o.PostcopyBandwidth, Rejoins = Rejoins, PagesSentAgain = PagesSentAgain, RejoinWaitMs = RejoinWaitMs,
            };
        }
        catch (Exception e) when (e is not OperationCanceledException || _failure.IsSet)
        {
            if (!Paused) _guest.ClosePauseWindow();
            var first = _failure.Error ?? e;
            // a destination that ends after the pause says so (a cancelled one too): no rejoin wait, the next one is served
            var msg = first is PeerAbortedException pa && Paused ? $"the destination ended the migration after the pause ({pa.Reason})"
                : first is FaultlineException ? first.Message : $"internal error: {first.Message}";
            PeerConnection.TryAbort(msg, main, urgent);
            throw new MigrationException(Paused
                ? $"{msg}; the source keeps the paused guest and all {Pages} pages"
                : msg, first);
        }
        finally
        {
            ThreadPriority.SetBase(baseNice);
            ThreadPriority.ReleaseCarriers();
            main?.Shutdown();
            urgent?.Shutdown();
            pushThread?.Join();
            demandThread?.Join();
            main?.Dispose();
            urgent?.Dispose();
        }
    }

    private Frame ReadMain(PeerConnection main)
    {
        try { return main.Read(); }
        catch (MigrationException) when (_failure.IsSet) { throw _failure.Error!; }
    }

    /// <summary>After the summary: the destination closes first, so our last frames are never cut off by a reset.</summary>
    private void WaitForClose(PeerConnection main)
    {
        main.Channel.ReceiveTimeout = _o.HandshakeTimeout;
        try
        {
            while (true) main.Reader.Read();
        }
        catch (MigrationException) { /* closed: done */ }
    }

    private Thread Worker(string name, Action? setup, Action body, PeerConnection main, PeerConnection urgent)
    {
        var t = new Thread(() =>
        {
            try { setup?.Invoke(); body(); }
            catch (LinkLostException)
            {
                // the connection broke: the thread reading main sees it too and decides (rejoin or fail)
                main.Shutdown();
                urgent.Shutdown();
            }
            catch (Exception e)
            {
                if (_failure.Set(e))
                {
                    main.Shutdown();
                    urgent.Shutdown();
                }
            }
        }) { Name = name, IsBackground = true };
        t.Start();
        return t;
    }

    /// <summary>
    /// Waits (up to <see cref="SourceOptions.RejoinTimeout"/>) for the destination of session <paramref name="nonce"/>
    /// to come back: its main channel with the session's nonce and the received-page bitmap (<see cref="FrameType.Recover"/>),
    /// then its urgent channel. Every page sent but not arrived becomes unsent again; the answer
    /// (<see cref="FrameType.Recovered"/>) says how many. A new destination is refused meanwhile: the guest runs on
    /// the lost one, which may still be alive.
    /// </summary>
    private (PeerConnection Main, PeerConnection Urgent) Rejoin(PeerGate gate, ulong nonce, SentPages sent, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var reply = new byte[RecoveredMessage.Size];
        while (true)
        {
            var left = _o.RejoinTimeout - Stopwatch.GetElapsedTime(started);
            PeerConnection? main = null, urgent = null;
            try
            {
                try { main = gate.Accept(ChannelRole.Main, nonce, left, ct, rejoin: true); }
                catch (MigrationException) when (!ct.IsCancellationRequested && Stopwatch.GetElapsedTime(started) >= _o.RejoinTimeout)
                {
                    throw new MigrationException($"the destination did not rejoin within {_o.RejoinTimeout.TotalSeconds:0.#} s after the link was lost");
                }
                var f = main.Expect(FrameType.Recover, _o.HandshakeTimeout);
                var (_, arrived) = RecoverMessage.Decode(f.Payload, Pages, main.Peer);
                urgent = gate.Accept(ChannelRole.Urgent, nonce, _o.HandshakeTimeout, ct);
                var again = sent.Resend(arrived.Span);
                new RecoveredMessage((ulong)again, Pages - (ulong)sent.SentCount).Encode(reply);
                main.Send(FrameType.Recovered, 0, reply);
                Rejoins++;
                PagesSentAgain += again;
                RejoinWaitMs += Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                MigrationLog.Rejoined(_o.Logger, main.Peer, again);
                return (main, urgent);
            }
            catch (LinkLostException) when (Stopwatch.GetElapsedTime(started) < _o.RejoinTimeout && !ct.IsCancellationRequested)
            {
                // lost again while rejoining: wait for the next attempt
                main?.Dispose();
                urgent?.Dispose();
            }
            catch
            {
                main?.Dispose();
                urgent?.Dispose();
                throw;
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _guest.Dispose();
        Machine.Dispose();
        _failure.Dispose();
    }
}
