using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Memory;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.Engines;
using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Destination;

/// <summary>The phases of one migration, in order (either end).</summary>
public enum MigrationPhase
{
    /// <summary>Building the VM, its memory, engine and threads (a prepared destination does this before it connects).</summary>
    Prepare,
    /// <summary>Handshake, link round trip, layout check.</summary>
    Connect,
    /// <summary>The source pauses and hands over the vCPU state; the destination resumes them (the downtime).</summary>
    HandOver,
    /// <summary>The guest runs on the destination; missing pages are demanded while the rest is pushed.</summary>
    PostCopy,
    /// <summary>Every page is present; the source's summary is checked and the guest finishes its verification.</summary>
    Complete,
}

/// <summary>
/// What the destination keeps for one migration, apart from any connection: the VM, the engine and its tracker (pages
/// present), the page source (pages received, requests in flight), the vCPU threads, the receiver threads, the session
/// id the source gave it, and when each phase began. A connection comes and goes (<see cref="Attach"/>,
/// <see cref="Detach"/>); the session's state stays, so that a later connection can resume the transfer.
/// </summary>
internal sealed class DestinationSession : IDisposable
{
    private readonly long[] _phaseNs = new long[Enum.GetValues<MigrationPhase>().Length];
    private int _disposed;

    public GuestMachine Machine { get; }
    /// <summary>The image digest, built as first copies land (no second copy of guest memory is kept).</summary>
    public PageDigest Digest { get; }
    public RemotePageSource Pages { get; }
    public IPagingEngine Engine { get; }
    public DestinationGuest Guest { get; }
    public StandbyThread MainReceiver { get; }
    public StandbyThread UrgentReceiver { get; }
    /// <summary>The source's session nonce, once connected (0 before).</summary>
    public ulong Id { get; private set; }
    public MigrationPhase Phase { get; private set; } = MigrationPhase.Prepare;
    /// <summary>The connection demands go out on now, if any.</summary>
    public PeerConnection? Urgent { get; private set; }

    private DestinationSession(GuestMachine m, PageDigest digest, RemotePageSource pages, IPagingEngine engine, DestinationGuest guest)
    {
        Machine = m; Digest = digest; Pages = pages; Engine = engine; Guest = guest;
        MainReceiver = new StandbyThread("fl-mig-rx-main");
        UrgentReceiver = new StandbyThread("fl-mig-rx-urg");
        _phaseNs[(int)MigrationPhase.Prepare] = Clock.NowNs();
    }

    /// <summary>Builds everything a guest of this shape needs on this end; any failure leaves nothing behind.</summary>
    public static DestinationSession Prepare(DestinationOptions o, int vcpus, ulong ramBytes, FirstFailure failure)
    {
        var started = Clock.NowNs();
        GuestMachine? machine = null;
        RemotePageSource? pages = null;
        IPagingEngine? engine = null;
        DestinationGuest? guest = null;
        try
        {
            o.Mixed?.Validate(vcpus);
            var kernel = o.Mixed?.Kernel(o.AsyncPf);
            machine = GuestMachine.Create(new MachineConfig(vcpus, ramBytes, o.Backing) { Kernel = kernel?.Kernel });
            if (o.Backing == Backing.Shmem) machine.Ram.MapBackingView();   // the page cache, allocated now (the engine finds it mapped)
            var digest = new PageDigest(machine.Ram.PageCount);
            pages = new RemotePageSource(machine.Ram, digest, machine.Config.Vcpus);
            engine = EngineFactory.Create(new PagingOptions(o.Engine, o.Backing, Readers: machine.Config.Vcpus)
            {
                PrefillPageCache = false, PageTimeout = o.IdleTimeout + o.RecoverTimeout, AsyncPf = o.Mixed is null ? new AsyncPfOptions() : o.AsyncPf with { Protocol = o.Mixed.Protocol },
            });
            engine.Start(machine, pages);
            Warmup.StatePath(vcpus);
            // the vCPUs keep one priority from their resume to the end (no switch per fault): o.VcpuPostcopyNice until every
            // page is present, then 0
            var tasks = kernel is null ? null : new TaskProgram(machine, kernel, o.Mixed!.TaskConfig);
            guest = new DestinationGuest(machine, engine, failure, o.VcpuPostcopyNice, tasks, pages);
            guest.Start();
            var s = new DestinationSession(machine, digest, pages, engine, guest);
            s._phaseNs[(int)MigrationPhase.Prepare] = started;
            return s;
        }
        catch
        {
            pages?.Fail(new MigrationException("destination preparation failed"));
            guest?.Dispose();
            engine?.Dispose();
            machine?.Dispose();
            pages?.Dispose();
            throw;
        }
    }

    /// <summary>Enters <paramref name="phase"/> (phases only move forward).</summary>
    public void Enter(MigrationPhase phase)
    {
        if (phase < Phase) throw new InvalidOperationException($"migration phase {phase} after {Phase}");
        Phase = phase;
        _phaseNs[(int)phase] = Clock.NowNs();
    }

    /// <summary>When <paramref name="phase"/> began (CLOCK_MONOTONIC ns), 0 if not yet.</summary>
    public long PhaseStartNs(MigrationPhase phase) => _phaseNs[(int)phase];

    /// <summary>A connection to the source with session id <paramref name="id"/> carries demands from now on (a later one must be of the same session).</summary>
    /// <summary>Returns the requests still in flight, sent again on it.</summary>
    public long Attach(ulong id, PeerConnection urgent)
    {
        if (Id != 0 && id != Id) throw new MigrationException($"the source's session 0x{id:x} is not this destination's session 0x{Id:x}");
        Id = id;
        Urgent = urgent;
        return Pages.Attach(urgent);
    }

    /// <summary>The connection is gone: demands queue until the next <see cref="Attach"/>; nothing else changes.</summary>
    public void Detach()
    {
        Pages.Detach();
        Urgent = null;
    }

    /// <summary>Pages present, received and requested-but-not-here: the state a new connection resumes from.</summary>
    public (long Present, long Received, long InFlight) Progress()
    {
        var t = Engine.Tracker;
        long inFlight = 0;
        for (ulong i = 0; i < t.Pages; i++) if (t.StateOf(i) == PageTracker.Requested) inFlight++;
        return (t.PresentCount, Pages.ReceivedCount, inFlight);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Pages.Fail(new MigrationException("destination is shutting down"));
        Guest.Dispose();
        MainReceiver.Dispose();
        UrgentReceiver.Dispose();
        Engine.Dispose();
        Machine.Dispose();
        Pages.Dispose();
    }
}
