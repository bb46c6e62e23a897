using System.Buffers.Binary;
using System.Collections.Concurrent;
using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;

namespace Faultline.Migration.Tests;

/// <summary>
/// The destination's page source (<see cref="RemotePageSource"/>) driven by hand against a recording sink, so that
/// every interleaving of the push/demand race is deterministic: requests batch into one Demand frame, first copies
/// are installed with one InstallRun per contiguous sub-run, a requested page wakes the fault path waiting on the
/// tracker, later copies are dropped, a run outside guest RAM is refused, and what the source knows outlives its
/// connection.
/// </summary>
public sealed class RunReceivePathTests
{
    private const int Pages = 16;

    private static (GuestRegion Ram, PageDigest Image, RemotePageSource Source, RecordingSink Sink) Build()
    {
        var ram = GuestRegion.Create(new GuestAddress(0x100000), Pages * 4096, Backing.Anonymous);
        var image = new PageDigest(ram.PageCount);
        var source = new RemotePageSource(ram, image, 1);
        var sink = new RecordingSink(ram);
        source.Start(sink);
        return (ram, image, source, sink);
    }

    private static byte[] PatternPages(GuestRegion ram)
    {
        var bytes = new byte[Pages * 4096];
        for (var p = 0; p < Pages; p++) PatternPageSource.Fill(ram.Base + (ulong)p * 4096, 77, bytes.AsSpan(p * 4096, 4096));
        return bytes;
    }

    private static void Request(RemotePageSource source, RecordingSink sink, GuestRegion ram, ulong page)
    {
        Assert.True(sink.Tracker.TryRequest(page));
        source.Request(ram.Base + page * 4096);
    }

    private static ulong[] Indices(byte[] frame)
    {
        var payload = frame.AsSpan(Wire.HeaderSize);
        var r = new ulong[payload.Length / 8];
        for (var i = 0; i < r.Length; i++) r[i] = BinaryPrimitives.ReadUInt64LittleEndian(payload[(i * 8)..]);
        return r;
    }

    [Fact]
    public void A_run_installs_every_first_copy_nobody_else_is_installing_wakes_the_waiting_fault_path_and_drops_second_copies()
    {
        var (ram, image, source, sink) = Build();
        using (ram) using (source) using (sink.Tracker)
        {
            var urgent = new CaptureChannel();
            using var conn = new PeerConnection(urgent, ChannelRole.Urgent);
            source.Attach(conn);
            var bytes = PatternPages(ram);
            byte[] Page(int p) => bytes.AsSpan(p * 4096, 4096).ToArray();

            // page 2 arrived already (a demand reply on the urgent channel) and was installed
            source.OnPage(2, Page(2), PageFlags.Demand);
            // a fault path needs page 6: it asks (one Demand frame) and waits on the tracker, not on the source
            Request(source, sink, ram, 6);
            Assert.Equal([6UL], Indices(urgent.Frames.Single()));
            var woken = false;
            var faultPath = new Thread(() => woken = sink.Tracker.WaitPresent(6, 0, TimeSpan.FromSeconds(10), null)) { IsBackground = true };
            faultPath.Start();
            // another installer is in the middle of installing page 5
            Assert.True(sink.Tracker.TryClaim(5));

            source.OnPageRun(0, Pages, bytes, PageFlags.Push);

            Assert.True(faultPath.Join(TimeSpan.FromSeconds(10)), "the waiting fault path was not woken by the run");
            Assert.True(woken);
            Assert.Equal(Page(6), sink.Bytes(6));
            // the first copies, offered in two sub-runs (page 2 is a second copy: not even offered); page 5 was skipped
            Assert.Equal([(0, 2), (3, 13)], sink.RunCalls);
            Assert.Equal(Enumerable.Range(0, Pages).Where(p => p != 5).Order(), sink.Installed.Order());
            Assert.Equal(1, source.Duplicates);
            Assert.Equal(1, source.AnsweredRequests);
            Assert.Equal(1, source.DemandLatency.Count);
            Assert.Equal(1, source.RunFrames);
            Assert.Equal(Pages - 1, source.PushedPages);
            Assert.Equal(1, source.DemandPages);
            Assert.True(source.AllReceived.WaitOne(0), "every page arrived, but AllReceived is not set");
            Assert.Single(urgent.Frames);   // nothing else was demanded

            // the image digest covers every page's first copy: the same as the digest of those bytes in guest memory
            bytes.CopyTo(ram.Span(ram.Base, bytes.Length));
            Assert.Equal(PageDigest.Of(ram).Sha256Hex(), image.Sha256Hex());

            // the same run again: all second copies, nothing offered
            sink.RunCalls.Clear();
            source.OnPageRun(0, Pages, bytes, PageFlags.Push);
            Assert.Empty(sink.RunCalls);
            Assert.Equal(1 + Pages, source.Duplicates);
        }
    }

    [Fact]
    public void Requests_made_while_a_demand_is_being_sent_leave_together_in_the_next_frame()
    {
        var (ram, image, source, sink) = Build();
        using (ram) using (source) using (sink.Tracker)
        {
            var urgent = new CaptureChannel { HoldFirstSend = new ManualResetEventSlim(false) };
            using var conn = new PeerConnection(urgent, ChannelRole.Urgent);
            source.Attach(conn);
            // the first fault path's send is stuck on the wire ...
            var first = new Thread(() => Request(source, sink, ram, 1)) { IsBackground = true };
            first.Start();
            Assert.True(urgent.FirstSendStarted.Wait(TimeSpan.FromSeconds(10)), "the first demand was not sent");
            // ... while three more faults ask: they queue and return at once (the sender takes them)
            Request(source, sink, ram, 3);
            Request(source, sink, ram, 4);
            Request(source, sink, ram, 9);
            Assert.Single(urgent.Frames);
            urgent.HoldFirstSend.Set();
            Assert.True(first.Join(TimeSpan.FromSeconds(10)));

            var frames = urgent.Frames.ToArray();
            Assert.Equal(2, frames.Length);
            Assert.Equal([1UL], Indices(frames[0]));
            Assert.Equal([3UL, 4UL, 9UL], Indices(frames[1]).Order());
            Assert.Equal(2, source.DemandFrames);
            Assert.Equal(4, source.DemandedPages);

            // one frame answers all of them (the demand server's batched reply): every requested page installed
            var bytes = PatternPages(ram);
            foreach (var p in new[] { 1, 3, 4, 9 }) source.OnPage((ulong)p, bytes.AsSpan(p * 4096, 4096), PageFlags.Demand);
            Assert.Equal(4, source.AnsweredRequests);
            foreach (var p in new ulong[] { 1, 3, 4, 9 }) Assert.True(sink.Tracker.IsPresent(p));
        }
    }

    [Fact]
    public void A_page_demanded_and_pushed_at_once_is_installed_once_and_copied_once()
    {
        for (var round = 0; round < 200; round++)
        {
            var (ram, image, source, sink) = Build();
            using (ram) using (source) using (sink.Tracker)
            {
                using var conn = new PeerConnection(new CaptureChannel(), ChannelRole.Urgent);
                source.Attach(conn);
                Request(source, sink, ram, 7);
                var bytes = PatternPages(ram);
                using var go = new Barrier(2);
                var urgentRx = new Thread(() => { go.SignalAndWait(); source.OnPage(7, bytes.AsSpan(7 * 4096, 4096), PageFlags.Demand); });
                var mainRx = new Thread(() => { go.SignalAndWait(); source.OnPageRun(4, 8, bytes.AsSpan(4 * 4096, 8 * 4096), PageFlags.Push); });
                urgentRx.Start(); mainRx.Start();
                urgentRx.Join(); mainRx.Join();

                Assert.Equal(1, sink.Copies[7]);                       // one install, one copy of its bytes
                Assert.Equal(1, source.Duplicates);                    // the other copy was dropped before any copy
                Assert.Equal(1, source.AnsweredRequests);
                Assert.Equal(8, sink.Installed.Count);
                Assert.Equal(bytes.AsSpan(7 * 4096, 4096).ToArray(), sink.Bytes(7));
            }
        }
    }

    [Fact]
    public void What_the_source_knows_outlives_its_connection_and_a_new_one_gets_every_request_still_in_flight()
    {
        var (ram, image, source, sink) = Build();
        using (ram) using (source) using (sink.Tracker)
        {
            var bytes = PatternPages(ram);
            var first = new CaptureChannel();
            var conn = new PeerConnection(first, ChannelRole.Urgent);
            source.Attach(conn);
            Request(source, sink, ram, 3);
            Request(source, sink, ram, 9);
            source.OnPage(3, bytes.AsSpan(3 * 4096, 4096), PageFlags.Demand);   // 3 came back, 9 is still in flight
            source.OnPageRun(10, 2, bytes.AsSpan(10 * 4096, 2 * 4096), PageFlags.Push);

            // the connection object goes away; a fault meanwhile queues its request
            source.Detach();
            conn.Dispose();
            Request(source, sink, ram, 12);

            var second = new CaptureChannel();
            using var conn2 = new PeerConnection(second, ChannelRole.Urgent);
            source.Attach(conn2);
            Assert.Equal([9UL, 12UL], second.Frames.SelectMany(Indices).Order());
            Assert.Equal(3, source.ReceivedCount);
            // pages that arrived before are still known: a copy of one now is a duplicate
            source.OnPage(10, bytes.AsSpan(10 * 4096, 4096), PageFlags.Push);
            Assert.Equal(1, source.Duplicates);
            source.OnPage(9, bytes.AsSpan(9 * 4096, 4096), PageFlags.Demand);
            Assert.True(sink.Tracker.IsPresent(9));
            Assert.Equal(2, source.AnsweredRequests);
        }
    }

    [Theory]
    [InlineData(15UL, 2)]
    [InlineData(16UL, 1)]
    [InlineData(ulong.MaxValue, 2)]
    public void A_run_outside_guest_RAM_is_refused(ulong first, int count)
    {
        var (ram, image, source, sink) = Build();
        using (ram) using (source) using (sink.Tracker)
        {
            var e = Assert.ThrowsAny<MigrationException>(() => source.OnPageRun(first, count, new byte[count * 4096], PageFlags.Push));
            Assert.Contains("out of range (guest RAM has 16 pages)", e.Message);
            Assert.Empty(sink.RunCalls);
            Assert.Equal(0, source.ReceivedCount);
        }
    }

    /// <summary>A sink that claims pages in its tracker as the engine's installer does and records what it installed (and how often it copied each page).</summary>
    private sealed class RecordingSink(GuestRegion ram) : IPageSink
    {
        private readonly byte[] _pages = new byte[ram.Size];
        public PageTracker Tracker { get; } = new(ram.Base, ram.Size);
        public List<(int First, int Count)> RunCalls { get; } = [];
        public ConcurrentBag<int> Installed { get; } = [];
        public int[] Copies { get; } = new int[ram.PageCount];

        public byte[] Bytes(int page) => _pages.AsSpan(page * 4096, 4096).ToArray();

        public bool Install(GuestAddress page, ReadOnlySpan<byte> bytes)
        {
            var i = Tracker.IndexOf(page);
            if (!Tracker.TryClaim(i)) return false;
            bytes[..4096].CopyTo(_pages.AsSpan((int)i * 4096));
            Interlocked.Increment(ref Copies[i]);
            Tracker.Publish(i);
            Installed.Add((int)i);
            return true;
        }

        public int InstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed)
        {
            lock (RunCalls) RunCalls.Add(((int)Tracker.IndexOf(first), count));
            var n = 0;
            for (var k = 0; k < count; k++)
                if (installed[k] = Install(first + (ulong)k * 4096, bytes.Slice(k * 4096, 4096))) n++;
            return n;
        }

        public void Fail(Exception error) => Tracker.Fail(error);
    }

    /// <summary>Keeps every frame sent (thread-safe); nothing to receive. Can hold its first send until released.</summary>
    private sealed class CaptureChannel : IByteChannel
    {
        public ConcurrentQueue<byte[]> Frames { get; } = new();
        public ManualResetEventSlim? HoldFirstSend { get; init; }
        public ManualResetEventSlim FirstSendStarted { get; } = new(false);
        public TimeSpan? ReceiveTimeout { get; set; }
        public long BytesSent { get; private set; }
        public long BytesReceived => 0;
        public string Peer => "capture";
        public void Send(ReadOnlySpan<byte> data)
        {
            Frames.Enqueue(data.ToArray());
            BytesSent += data.Length;
            if (!FirstSendStarted.IsSet) { FirstSendStarted.Set(); HoldFirstSend?.Wait(TimeSpan.FromSeconds(10)); }
        }
        public int Receive(Span<byte> buffer) => 0;
        public void Shutdown() { }
        public void Dispose() { }
    }
}
