using System.Buffers.Binary;
using System.Collections.Concurrent;
using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;
using Faultline.Paging;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

/// <summary>
/// A destination session on a real VM and engine (exits, real userfaultfd): what it knows — pages present, pages
/// received, requests in flight, its session id and phase — is the same after its connection object is dropped and a
/// new one is attached, and the new connection is asked for every page still in flight (resuming the transfer itself
/// is a later issue).
/// </summary>
public sealed class DestinationSessionTests
{
    [KvmFact]
    public void The_sessions_state_is_intact_after_its_connection_is_dropped_and_a_new_one_is_attached()
    {
        using var failure = new FirstFailure();
        var o = new DestinationOptions(MigrationAddress.Parse("127.0.0.1:1"), PagingMode.Exits, Backing.Anonymous);
        using var session = DestinationSession.Prepare(o, 2, 1 * MiB, failure);
        var pages = session.Pages;
        var tracker = session.Engine.Tracker;
        var ram = session.Machine.Ram;
        var first = new Capture();
        var c1 = new PeerConnection(first, ChannelRole.Urgent);
        session.Enter(MigrationPhase.Connect);
        session.Attach(0xABCD, c1);
        session.Enter(MigrationPhase.PostCopy);

        // two fault paths ask for pages 5 and 40; a run of 16 pages lands (and page 5 with it); page 40 stays in flight
        foreach (var p in new ulong[] { 5, 40 }) { Assert.True(tracker.TryRequest(p)); pages.Request(ram.Base + p * 4096); }
        var bytes = new byte[16 * 4096];
        for (var i = 0; i < 16; i++) PatternPageSource.Fill(ram.Base + (ulong)i * 4096, 3, bytes.AsSpan(i * 4096, 4096));
        pages.OnPageRun(0, 16, bytes, PageFlags.Push);
        var before = session.Progress();
        Assert.Equal((16L, 16L, 1L), before);
        Assert.Equal([5UL, 40UL], first.Indices().Order());

        // the connection object is dropped: the session keeps everything
        session.Detach();
        c1.Dispose();
        Assert.Equal(before, session.Progress());
        Assert.Equal(0xABCDUL, session.Id);
        Assert.Equal(MigrationPhase.PostCopy, session.Phase);
        Assert.Equal(ram.Base.Value + 5 * 4096 + 3, ram.Qword(ram.Base + 5 * 4096));   // installed bytes still there

        // a new connection of the same session is asked for what is still in flight, and only that
        var second = new Capture();
        using var c2 = new PeerConnection(second, ChannelRole.Urgent);
        session.Attach(0xABCD, c2);
        Assert.Equal([40UL], second.Indices());
        Assert.Equal(before, session.Progress());
        // a page now arriving completes the request as if nothing had happened
        Span<byte> page = stackalloc byte[4096];
        PatternPageSource.Fill(ram.Base + 40 * 4096, 3, page);
        pages.OnPage(40, page, PageFlags.Demand);
        Assert.Equal((17L, 17L, 0L), session.Progress());
        // a connection of another session is refused
        using var c3 = new PeerConnection(new Capture(), ChannelRole.Urgent);
        Assert.ThrowsAny<MigrationException>(() => session.Attach(0x9999, c3));
    }

    private sealed class Capture : IByteChannel
    {
        private readonly ConcurrentQueue<byte[]> _frames = new();
        public TimeSpan? ReceiveTimeout { get; set; }
        public long BytesSent => 0;
        public long BytesReceived => 0;
        public string Peer => "capture";
        public void Send(ReadOnlySpan<byte> data) => _frames.Enqueue(data.ToArray());
        public int Receive(Span<byte> buffer) => 0;
        public void Shutdown() { }
        public void Dispose() { }

        public ulong[] Indices() => _frames.SelectMany(f =>
        {
            var p = f.AsSpan(Wire.HeaderSize).ToArray();
            return Enumerable.Range(0, p.Length / 8).Select(i => BinaryPrimitives.ReadUInt64LittleEndian(p.AsSpan(i * 8)));
        }).ToArray();
    }
}
