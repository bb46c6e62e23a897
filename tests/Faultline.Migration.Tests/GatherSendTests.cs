using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Io;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Tests;

/// <summary>
/// The push's gather send (sendmsg with an iovec list): over real TCP and Unix sockets it carries exactly the bytes of
/// the flattened send, also when the kernel takes fewer than all of them, and frames written as header + pages decode
/// as the copied ones do. Seeded; failures name the seed.
/// </summary>
public sealed class GatherSendTests
{
    private static readonly int BaseSeed = Environment.GetEnvironmentVariable("FAULTLINE_SEED") is { } s ? int.Parse(s) : 20261123;

    /// <summary>A connected blocking stream socket pair (TCP loopback with TCP_NODELAY, or Unix).</summary>
    private sealed class SocketPair : IDisposable
    {
        private readonly string? _path;
        public Socket Sender { get; }
        public Socket Receiver { get; }

        public SocketPair(bool unix)
        {
            using var listener = unix
                ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            EndPoint ep = unix
                ? new UnixDomainSocketEndPoint(_path = $"/tmp/fl-gather-{Environment.ProcessId}-{Guid.NewGuid():N}.sock")
                : new IPEndPoint(IPAddress.Loopback, 0);
            listener.Bind(ep);
            listener.Listen(1);
            Sender = new Socket(listener.AddressFamily, SocketType.Stream, unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
            Sender.Connect(listener.LocalEndPoint!);
            Receiver = listener.Accept();
        }

        public void Dispose()
        {
            Sender.Dispose();
            Receiver.Dispose();
            if (_path is not null) File.Delete(_path);
        }
    }

    /// <summary>
    /// A gather list of <paramref name="segments"/> pieces of 1 byte to 32 KiB at random places of <paramref name="memory"/>
    /// (pinned), and the bytes it stands for, concatenated independently of the list.
    /// </summary>
    private static (IoVecList List, byte[] Expected) RandomGather(Random r, byte[] memory, int segments)
    {
        var list = new IoVecList();
        var expected = new MemoryStream();
        for (var i = 0; i < segments; i++)
        {
            var len = r.Next(8) == 0 ? r.Next(1, 64) : r.Next(1, 32 * 1024);
            var at = r.Next(memory.Length - len);
            list.Add(memory.AsSpan(at, len));
            expected.Write(memory, at, len);
        }
        Assert.Equal(expected.Length, list.Length);
        return (list, expected.ToArray());
    }

    private static byte[] PinnedRandom(Random r, int bytes)
    {
        var m = GC.AllocateUninitializedArray<byte>(bytes, pinned: true);
        r.NextBytes(m);
        return m;
    }

    /// <summary>Reads <paramref name="count"/> bytes, slowly at first (the sender's buffers fill up and its sends block or time out).</summary>
    private static Thread SlowReader(Socket s, int count, byte[] into, Action<Exception> failed) => new(() =>
    {
        try
        {
            Thread.Sleep(50);
            var got = 0;
            var reads = 0;
            while (got < count)
            {
                var n = s.Receive(into.AsSpan(got, Math.Min(count - got, 1 + reads * 997 % (96 * 1024))));
                if (n == 0) throw new InvalidOperationException($"stream ended after {got} of {count} bytes");
                got += n;
                if (++reads % 16 == 0) Thread.Sleep(1);
            }
        }
        catch (Exception e) { failed(e); }
    }) { IsBackground = true, Name = "fl-test-rx" };

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void A_gather_send_larger_than_the_socket_buffers_carries_exactly_the_flattened_bytes(bool unix, bool sendTimeout)
    {
        var seed = BaseSeed + (unix ? 1 : 0) + (sendTimeout ? 2 : 0);
        var r = new Random(seed);
        var memory = PinnedRandom(r, 8 << 20);
        var (list, expected) = RandomGather(r, memory, IoVecList.MaxCapacity);   // ~14 MiB in 1024 segments
        using var pair = new SocketPair(unix);
        // with SO_SNDTIMEO, a blocked sendmsg returns what it sent so far (or EAGAIN): short writes inside segments
        if (sendTimeout) pair.Sender.SendTimeout = 1;
        using var ch = new SocketChannel(pair.Sender, "test");
        var got = new byte[expected.Length];
        Exception? error = null;
        var reader = SlowReader(pair.Receiver, expected.Length, got, e => error = e);
        reader.Start();
        ch.SendGather(list);
        reader.Join();
        Assert.Null(error);
        Assert.True(list.IsEmpty && list.Count == 0, $"seed {seed}: the list is not empty after the send");
        Assert.Equal(expected.Length, ch.BytesSent);
        Assert.True(expected.AsSpan().SequenceEqual(got), $"seed {seed}: the received bytes differ from the flattened gather ({FirstDifference(expected, got)})");
    }

    [Fact]
    public void Short_writes_happen_and_continue_inside_a_segment()
    {
        // the loop SocketChannel runs, on a TCP socket with a 1 ms SO_SNDTIMEO and a slow reader: it must see short writes
        var seed = BaseSeed + 10;
        var r = new Random(seed);
        var memory = PinnedRandom(r, 8 << 20);
        var (list, expected) = RandomGather(r, memory, IoVecList.MaxCapacity);
        using var pair = new SocketPair(unix: false);
        pair.Sender.SendTimeout = 1;
        var got = new byte[expected.Length];
        Exception? error = null;
        var reader = SlowReader(pair.Receiver, expected.Length, got, e => error = e);
        reader.Start();
        int shortWrites = 0, again = 0;
        long sent = 0;
        while (!list.IsEmpty)
        {
            var before = list.Length;
            var n = list.SendOnce(pair.Sender.SafeHandle, out var errno);
            if (n < 0)
            {
                Assert.True(errno is Errno.EAGAIN or Errno.EINTR, $"sendmsg failed: {Errno.Describe(errno)}");
                Assert.Equal(before, list.Length);
                again++;
                pair.Sender.Poll(-1, SelectMode.SelectWrite);
                continue;
            }
            Assert.Equal(before - n, list.Length);
            if (n < before) shortWrites++;
            sent += n;
        }
        reader.Join();
        Assert.Null(error);
        Assert.Equal(expected.Length, sent);
        Assert.True(shortWrites > 0, $"seed {seed}: no short write in {expected.Length} bytes (EAGAIN {again} times)");
        Assert.True(expected.AsSpan().SequenceEqual(got), $"seed {seed}: {FirstDifference(expected, got)}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_gather_send_to_a_closed_peer_or_on_a_closed_channel_is_a_one_line_MigrationException(bool unix)
    {
        var memory = PinnedRandom(new Random(BaseSeed + 30), 1 << 20);
        using var pair = new SocketPair(unix);
        var ch = new SocketChannel(pair.Sender, "test");
        pair.Receiver.Dispose();
        var list = new IoVecList();
        // TCP may buffer the first send before the peer's reset arrives; the ones after it fail
        var e = Assert.ThrowsAny<MigrationException>(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                list.Clear();
                for (var o = 0; o < memory.Length; o += 64 * 1024) list.Add(memory.AsSpan(o, 32 * 1024));
                ch.SendGather(list);
            }
        });
        Assert.Matches(@"^connection to test (was shut down|lost \(ConnectionReset\))$", e.Message);
        ch.Dispose();
        list.Clear();
        list.Add(memory.AsSpan(0, 10));
        Assert.Equal("connection to test is closed", Assert.ThrowsAny<MigrationException>(() => ch.SendGather(list)).Message);
    }

    [Fact]
    public void Advance_drops_whole_segments_and_shortens_a_partly_sent_one()
    {
        for (var iter = 0; iter < 200; iter++)
        {
            var seed = BaseSeed + 100 + iter;
            var r = new Random(seed);
            var memory = PinnedRandom(r, 256 * 1024);
            var list = new IoVecList(r.Next(1, 64));
            var expected = new List<byte>();
            for (var i = 0; i < list.Capacity; i++)
            {
                var len = r.Next(1, 3000);
                var at = r.Next(memory.Length - len);
                list.Add(memory.AsSpan(at, len));
                expected.AddRange(memory.AsSpan(at, len));
            }
            var done = 0;
            while (!list.IsEmpty)
            {
                var step = r.Next(3) == 0 ? (int)list.Length : r.Next(0, 4000);
                step = (int)Math.Min(step, list.Length);
                list.Advance(step);
                done += step;
                var left = new byte[list.Length];
                Assert.Equal(left.Length, list.CopyTo(left));
                Assert.True(left.AsSpan().SequenceEqual(expected.ToArray().AsSpan(done)), $"seed {seed}: wrong bytes after advancing {done}");
            }
            Assert.Equal(0, list.Count);
            Assert.Equal(list.Capacity, list.Free);
        }
    }

    [Fact]
    public void Adjacent_segments_share_one_slot_and_a_full_list_refuses_more()
    {
        var memory = PinnedRandom(new Random(BaseSeed), 4096);
        var list = new IoVecList(2);
        list.Add(memory.AsSpan(0, 100));
        list.Add(memory.AsSpan(100, 200));   // continues the first: no new slot
        list.Add([]);
        Assert.Equal(1, list.Count);
        Assert.Equal(300, list.Length);
        list.Add(memory.AsSpan(1000, 10));
        var e = Assert.Throws<InvalidOperationException>(() => list.Add(memory.AsSpan(2000, 10)));
        Assert.Equal("the gather list is full (2 segments)", e.Message);
        Assert.Equal(310, list.Length);
        list.Add(memory.AsSpan(1010, 5));    // still fits: it extends the last segment
        Assert.Equal(315, list.Length);
    }

    [Fact]
    public void Gather_sends_and_plain_sends_from_two_threads_never_interleave()
    {
        // messages of 64..640 KiB: without one send lock, two threads blocked in the kernel would interleave their bytes
        var seed = BaseSeed + 20;
        var memory = PinnedRandom(new Random(seed), 1 << 20);
        const int PerThread = 24;
        using var pair = new SocketPair(unix: false);
        using var ch = new SocketChannel(pair.Sender, "test");
        static int Length(int tag, int seq) => (64 + (tag * 7 + seq * 131) % 577) * 1024;
        static int Offset(int tag, int seq) => (tag * 4099 + seq * 65537) % (1 << 19);
        var threads = new Thread[2];
        Exception? error = null;
        for (var tag = 0; tag < 2; tag++)
        {
            var t = tag;
            threads[t] = new Thread(() =>
            {
                try
                {
                    var list = new IoVecList();
                    var head = GC.AllocateArray<byte>(16, pinned: true);
                    for (var seq = 0; seq < PerThread; seq++)
                    {
                        var len = Length(t, seq);
                        var body = memory.AsSpan(Offset(t, seq), len);
                        BinaryPrimitives.WriteInt32LittleEndian(head, t);
                        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(4), seq);
                        if (t == 0)
                        {
                            list.Add(head.AsSpan(0, 8));
                            for (var o = 0; o < len; o += 5000) list.Add(body[o..Math.Min(len, o + 5000)]);
                            ch.SendGather(list);
                        }
                        else
                        {
                            var flat = new byte[8 + len];
                            head.AsSpan(0, 8).CopyTo(flat);
                            body.CopyTo(flat.AsSpan(8));
                            ch.Send(flat);
                        }
                    }
                }
                catch (Exception e) { error = e; }
            }) { IsBackground = true, Name = $"fl-test-tx{t}" };
        }
        foreach (var t in threads) t.Start();
        var rx = new SocketChannel(pair.Receiver, "test-rx");
        var next = new int[2];
        var buf = new byte[8 + 700 * 1024];
        Thread.Sleep(20);   // both senders fill the socket buffers and block in the kernel, mid-message
        for (var m = 0; m < 2 * PerThread; m++)
        {
            if (m % 4 == 0) Thread.Sleep(1);
            ReadExactly(rx, buf.AsSpan(0, 8));
            var tag = BinaryPrimitives.ReadInt32LittleEndian(buf);
            var seq = BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(4));
            Assert.True(tag is 0 or 1 && seq == next[tag], $"seed {seed}: message {m} has header {tag}/{seq}: the bytes interleaved");
            var len = Length(tag, seq);
            ReadExactly(rx, buf.AsSpan(8, len));
            Assert.True(buf.AsSpan(8, len).SequenceEqual(memory.AsSpan(Offset(tag, seq), len)), $"seed {seed}: message {tag}/{seq} has other bytes");
            next[tag]++;
        }
        foreach (var t in threads) t.Join();
        Assert.Null(error);
    }

    [Fact]
    public void Pages_gathered_after_run_and_page_headers_decode_as_the_copied_frames_do()
    {
        for (var iter = 0; iter < 20; iter++)
        {
            var seed = BaseSeed + 300 + iter;
            var r = new Random(seed);
            var ram = PinnedRandom(r, 512 * Wire.PageSize);   // "guest RAM"; some pages zero
            for (var i = 0; i < 512; i++) if (r.Next(10) == 0) ram.AsSpan(i * Wire.PageSize, Wire.PageSize).Clear();
            var heads = GC.AllocateUninitializedArray<byte>(64 * 1024, pinned: true);
            var list = new IoVecList();
            var flat = new MemoryStream();
            var frame = new byte[Wire.HeaderSize + Wire.RunPayloadSize(Wire.MaxRunPages)];
            var used = 0;
            var listed = 0;
            var frames = r.Next(1, 120);
            for (var f = 0; f < frames; f++)
            {
                var first = r.Next(512);
                var n = Math.Min(r.Next(4) == 0 ? 1 : r.Next(1, Wire.MaxRunPages + 1), 512 - first);
                var pages = ram.AsSpan(first * Wire.PageSize, n * Wire.PageSize);
                var flags = r.Next(2) == 0 ? PageFlags.Push : PageFlags.Demand;
                if (r.Next(6) == 0)
                {
                    // a frame with no page data stays whole in the buffer, between gathered ones
                    used += FrameCodec.WriteIndex(heads.AsSpan(used), FrameType.ZeroPage, (byte)flags, (ulong)first);
                    flat.Write(FrameCodec.ToArray(FrameType.ZeroPage, (byte)flags, BitConverter.GetBytes((ulong)first)));
                    continue;
                }
                if (n == 1 && r.Next(2) == 0)
                {
                    used += FrameCodec.WritePageHeader(heads.AsSpan(used), flags, (ulong)first, pages);
                    flat.Write(frame, 0, FrameCodec.WritePage(frame, flags, (ulong)first, pages));
                }
                else
                {
                    used += FrameCodec.WritePageRunHeader(heads.AsSpan(used), flags, (ulong)first, n, pages);
                    flat.Write(frame, 0, FrameCodec.WritePageRun(frame, flags, (ulong)first, n, pages));
                }
                list.Add(heads.AsSpan(listed, used - listed));
                list.Add(pages);
                listed = used;
            }
            list.Add(heads.AsSpan(listed, used - listed));
            var expected = flat.ToArray();

            using var pair = new SocketPair(unix: r.Next(2) == 0);
            using var tx = new SocketChannel(pair.Sender, "test");
            using var rx = new SocketChannel(pair.Receiver, "test-rx");
            var hello = new byte[HelloMessage.Size];
            new HelloMessage(Wire.Version, ChannelRole.Main, 1).Encode(hello);
            var helloFrame = FrameCodec.ToArray(FrameType.Hello, 0, hello);
            Exception? error = null;
            var sender = new Thread(() =>
            {
                try { tx.Send(helloFrame); tx.SendGather(list); tx.Shutdown(); }
                catch (Exception e) { error = e; }
            }) { IsBackground = true, Name = "fl-test-tx" };
            sender.Start();
            var gathered = new FrameReader(rx);
            var copied = new FrameReader(new MemoryChannel([.. helloFrame, .. expected], r));
            gathered.Read();
            copied.Read();
            for (var f = 0; f < frames; f++)   // each step above wrote one frame
            {
                var want = copied.Read();
                var got = gathered.Read();
                Assert.True(want.Type == got.Type && want.Flags == got.Flags && want.Payload.SequenceEqual(got.Payload),
                    $"seed {seed}: frame {f} decoded as {got.Type}/{got.Flags}/{got.Payload.Length} bytes, the copied one as {want.Type}/{want.Flags}/{want.Payload.Length}");
            }
            sender.Join();
            Assert.Null(error);
            Assert.Equal(expected.Length + helloFrame.Length, tx.BytesSent);
            Assert.Contains("closed the connection", Assert.ThrowsAny<MigrationException>(() => gathered.Read()).Message);
        }
    }

    private static void ReadExactly(IByteChannel ch, Span<byte> into)
    {
        var got = 0;
        while (got < into.Length)
        {
            var n = ch.Receive(into[got..]);
            if (n == 0) throw new InvalidOperationException("stream ended early");
            got += n;
        }
    }

    private static string FirstDifference(byte[] a, byte[] b)
    {
        var i = a.AsSpan().CommonPrefixLength(b);
        return i == a.Length && a.Length == b.Length ? "equal" : $"first difference at byte {i} of {a.Length}";
    }
}
