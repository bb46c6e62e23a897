using System.Buffers.Binary;
using System.Collections.Concurrent;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Migration.Tests;

/// <summary>
/// The destination's receive path for page runs (<see cref="RemotePageSource.OnPageRun"/>), driven by hand against a
/// recording engine so that every interleaving of the push/demand race is deterministic: first copies are installed
/// with one TryInstallRun per contiguous sub-run, pages a fault path owns go to its waiter or are kept until it asks,
/// later copies are dropped, and a run outside guest RAM is refused.
/// </summary>
public sealed class RunReceivePathTests
{
    private const int Pages = 16;

    [Fact]
    public void A_run_installs_what_nobody_owns_hands_owned_pages_to_their_fault_path_and_drops_second_copies()
    {
        using var ram = GuestRegion.Create(new GuestAddress(0x100000), Pages * 4096, Backing.Anonymous);
        using var image = new ReceivedImage(ram.Size);
        using var source = new RemotePageSource(ram, image, 1, TimeSpan.FromSeconds(10));
        var engine = new RecordingEngine(ram);
        var urgent = new CaptureChannel();
        using var conn = new PeerConnection(urgent, ChannelRole.Urgent);
        source.Attach(engine, conn);
        var bytes = new byte[Pages * 4096];
        for (var p = 0; p < Pages; p++) PatternPageSource.Fill(ram.Base + (ulong)p * 4096, 77, bytes.AsSpan(p * 4096, 4096));
        byte[] Page(int p) => bytes.AsSpan(p * 4096, 4096).ToArray();

        // page 2 arrived already (a demand reply on the urgent channel) and was installed
        source.OnPage(2, Page(2), PageFlags.Demand);
        // a fault path owns page 6 and is waiting for it (its demand is on the wire) ...
        Assert.True(engine.Tracker.TryClaim(6));
        var got6 = new byte[4096];
        var faultPath = new Thread(() => source.ReadPage(ram.Base + 6 * 4096, got6)) { IsBackground = true };
        faultPath.Start();
        Assert.True(SpinWait.SpinUntil(() => urgent.Frames.Count == 1, TimeSpan.FromSeconds(10)), "the fault path sent no demand");
        // ... and another owns page 5 but has not asked yet
        Assert.True(engine.Tracker.TryClaim(5));

        source.OnPageRun(0, Pages, bytes, PageFlags.Push);

        Assert.True(faultPath.Join(TimeSpan.FromSeconds(10)), "the waiting fault path was not woken by the run");
        Assert.Equal(Page(6), got6);
        // the first copies nobody owned, installed in two sub-runs (page 2 is a second copy: not even offered)
        Assert.Equal([(0, 2), (3, 13)], engine.RunCalls);
        Assert.Equal(Enumerable.Range(0, Pages).Where(p => p is not (5 or 6)).Order(), engine.Installed.Order());
        Assert.Equal(1, source.Duplicates);
        Assert.Equal(1, source.HandedToWaiters);
        Assert.Equal(1, source.KeptForLaterAsk);
        Assert.Equal(2, source.RunPagesToFaultPath);
        Assert.Equal(1, source.RunFrames);
        Assert.Equal(Pages - 1, source.PushedPages);
        Assert.Equal(1, source.DemandPages);
        Assert.True(source.AllReceived.WaitOne(0), "every page arrived, but AllReceived is not set");

        // page 5's fault path asks now: it gets the kept bytes at once, without a demand on the wire
        var got5 = new byte[4096];
        source.ReadPage(ram.Base + 5 * 4096, got5);
        Assert.Equal(Page(5), got5);
        Assert.Single(urgent.Frames);
        Assert.Equal(6UL, BinaryPrimitives.ReadUInt64LittleEndian(urgent.Frames.Single().AsSpan(Wire.HeaderSize)));

        // the received image holds every page's first copy
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)), image.Sha256Hex());

        // the same run again: all second copies, nothing installed
        engine.RunCalls.Clear();
        source.OnPageRun(0, Pages, bytes, PageFlags.Push);
        Assert.Empty(engine.RunCalls);
        Assert.Equal(1 + Pages, source.Duplicates);
    }

    [Theory]
    [InlineData(15UL, 2)]
    [InlineData(16UL, 1)]
    [InlineData(ulong.MaxValue, 2)]
    public void A_run_outside_guest_RAM_is_refused(ulong first, int count)
    {
        using var ram = GuestRegion.Create(new GuestAddress(0x100000), Pages * 4096, Backing.Anonymous);
        using var image = new ReceivedImage(ram.Size);
        using var source = new RemotePageSource(ram, image, 1, TimeSpan.FromSeconds(1));
        var engine = new RecordingEngine(ram);
        using var conn = new PeerConnection(new CaptureChannel(), ChannelRole.Urgent);
        source.Attach(engine, conn);
        var e = Assert.Throws<MigrationException>(() => source.OnPageRun(first, count, new byte[count * 4096], PageFlags.Push));
        Assert.Contains("out of range (guest RAM has 16 pages)", e.Message);
        Assert.Empty(engine.RunCalls);
        Assert.Equal(0, source.ReceivedCount);
    }

    /// <summary>An engine that claims pages in its tracker as the real one does and records what it installed.</summary>
    private sealed class RecordingEngine(GuestRegion ram) : IPagingEngine
    {
        public PagingOptions Options { get; } = new(Paging.PagingMode.Exits, Backing.Anonymous);
        public PageTracker Tracker { get; } = new(ram.Base, ram.Size);
        public List<(int First, int Count)> RunCalls { get; } = [];
        public ConcurrentBag<int> Installed { get; } = [];

        public void Start(GuestMachine machine, IPageSource source) => throw new NotSupportedException();
        public bool TryHandleExit(Vcpu vcpu, in VcpuExit exit) => false;
        public PagingStats Snapshot() => new() { Installed = Installed.Count };
        public void Dispose() { }

        public bool TryInstall(GuestAddress page, ReadOnlySpan<byte> bytes)
        {
            var i = Tracker.IndexOf(page);
            if (!Tracker.TryClaim(i)) return false;
            Tracker.Publish(i);
            Installed.Add((int)i);
            return true;
        }

        public int TryInstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed)
        {
            RunCalls.Add(((int)Tracker.IndexOf(first), count));
            var n = 0;
            for (var k = 0; k < count; k++)
                if (installed[k] = TryInstall(first + (ulong)k * 4096, bytes.Slice(k * 4096, 4096))) n++;
            return n;
        }
    }

    /// <summary>Keeps every frame sent (thread-safe); nothing to receive.</summary>
    private sealed class CaptureChannel : IByteChannel
    {
        public ConcurrentQueue<byte[]> Frames { get; } = new();
        public TimeSpan? ReceiveTimeout { get; set; }
        public long BytesSent { get; private set; }
        public long BytesReceived => 0;
        public string Peer => "capture";
        public void Send(ReadOnlySpan<byte> data) { Frames.Enqueue(data.ToArray()); BytesSent += data.Length; }
        public int Receive(Span<byte> buffer) => 0;
        public void Shutdown() { }
        public void Dispose() { }
    }
}
