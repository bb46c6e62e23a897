using System.Buffers.Binary;
using Faultline.Guest;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;
using Xunit.Abstractions;

namespace Faultline.Migration.Tests;

/// <summary>
/// Hostile bytes through the real decoder: generated frames, most of them mutated (bit flips, lengths and types
/// re-checksummed so they get past the header check, truncation, payload garbage under valid checksums, trailing
/// junk), fed in random-sized pieces to <see cref="FrameReader"/> and then to the typed message decoders. Every case
/// ends in a frame equal to what was sent (unmutated), a decoded message, or one <see cref="MigrationException"/>:
/// never another exception, a hang (the stream ends: a bad length can only mean "closed mid-frame") or a buffer
/// beyond the reader's one. Seeded; the seed and case are in every failure.
/// </summary>
public sealed class FrameFuzzTests(ITestOutputHelper output)
{
    private static readonly int Seed = Environment.GetEnvironmentVariable("FAULTLINE_SEED") is { } s ? int.Parse(s) : 20261202;
    private const int Frames = 100_000;

    private static readonly FrameType[] Types = Enum.GetValues<FrameType>();

    /// <summary>A byte stream that can be loaded again (one reader for every case), handed out in random pieces, 0 at its end.</summary>
    private sealed class FeedChannel(Random rng) : IByteChannel
    {
        private byte[] _data = [];
        private int _pos;
        public void Load(byte[] data) { _data = data; _pos = 0; }
        public TimeSpan? ReceiveTimeout { get; set; }
        public long BytesSent => 0;
        public long BytesReceived => _pos;
        public string Peer => "fuzz";
        public void Send(ReadOnlySpan<byte> d) { }
        public int Receive(Span<byte> buffer)
        {
            if (_pos >= _data.Length) return 0;
            var n = Math.Min(Math.Min(buffer.Length, _data.Length - _pos), rng.Next(1, 6000));
            _data.AsSpan(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }
        public void Shutdown() { }
        public void Dispose() { }
    }

    private static byte[] Payload(Random r, FrameType t, byte[] vcpuState)
    {
        byte[] p;
        switch (t)
        {
            case FrameType.Hello:
                p = new byte[HelloMessage.Size];
                new HelloMessage((ushort)(r.Next(4) == 0 ? r.Next(65536) : Wire.Version), (ChannelRole)r.Next(4), (ulong)r.NextInt64(), (HelloFlags)r.Next(4)).Encode(p);
                return p;
            case FrameType.VcpuState: return (byte[])vcpuState.Clone();
            case FrameType.Ping or FrameType.Pong:
                p = new byte[PingMessage.Size];
                var count = (uint)r.Next(0, 12_000);
                new PingMessage((uint)r.Next(0, 12_000), count, r.NextInt64()).Encode(p);
                return p;
            case FrameType.PageRun:
            {
                var n = r.Next(1, 5);
                var pages = new byte[n * Wire.PageSize];
                pages[r.Next(pages.Length)] = (byte)r.Next(256);
                var frame = new byte[Wire.HeaderSize + Wire.RunPayloadSize(n)];
                FrameCodec.WritePageRun(frame, PageFlags.Push, (ulong)r.NextInt64(), n, pages);
                return frame[Wire.HeaderSize..];
            }
            case FrameType.Recover:
                // a bitmap for 1001 pages (the consumer's guest) most of the time, otherwise for some other size
                p = new byte[RecoverMessage.SizeFor(r.Next(4) == 0 ? (ulong)r.Next(1, 3000) : 1001)];
                BinaryPrimitives.WriteUInt64LittleEndian(p, r.Next(8) == 0 ? (ulong)r.NextInt64() : 1001);
                r.NextBytes(p.AsSpan(RecoverMessage.FixedSize));
                if (r.Next(2) == 0) p[^1] &= 0xFF >> (8 - 1001 % 8);   // bits past the last page clear (else refused)
                return p;
            case FrameType.Page: p = new byte[Wire.PagePayloadSize]; break;
            case FrameType.Demand: p = new byte[8 * r.Next(1, 20)]; break;
            case FrameType.Abort: p = new byte[r.Next(0, 200)]; break;
            default:
                // the type's exact length (found by asking the wire's own rule), else a small random one
                var len = 0;
                while (len < 200 && Wire.LengthAllowed(t, (uint)len) != true) len++;
                p = new byte[len < 200 ? len : r.Next(0, 64)];
                break;
        }
        r.NextBytes(p.AsSpan(0, Math.Min(p.Length, 64)));
        return p;
    }

    /// <summary>What a receiver does with a frame: the typed decoders and the accessors it uses, each checking what it reads.</summary>
    private static void Consume(in Frame f)
    {
        switch (f.Type)
        {
            case FrameType.Hello: HelloMessage.Decode(f.Payload, "fuzz"); break;
            case FrameType.Layout: _ = LayoutMessage.Decode(f.Payload).Describe(); break;
            case FrameType.VcpuState: VcpuStateMessage.Decode(f.Payload, 2); break;
            case FrameType.Ping or FrameType.Pong: PingMessage.Decode(f.Payload, "fuzz"); break;
            case FrameType.Complete: CompleteMessage.Decode(f.Payload); break;
            case FrameType.Recover:
                var (_, bits) = RecoverMessage.Decode(f.Payload, 1001, "fuzz");
                for (ulong i = 0; i < 1001; i++) _ = RecoverMessage.Arrived(bits.Span, i);
                break;
            case FrameType.Recovered: RecoveredMessage.Decode(f.Payload); break;
            case FrameType.Summary: SummaryMessage.Decode(f.Payload); break;
            case FrameType.Abort: _ = f.AbortMessage; break;
            case FrameType.AuthChallenge or FrameType.AuthProof:
                if (f.Payload.Length != Wire.AuthSize) throw new InvalidOperationException($"{f.Type} frame of {f.Payload.Length} bytes got past the reader");
                break;
            case FrameType.Page when !f.Damaged: _ = f.Index; _ = f.PageBytes.Length; break;
            case FrameType.PageRun when !f.Damaged: _ = f.Index; _ = f.RunPages.Length + f.RunCrcs.Length; break;
            case FrameType.ZeroPage or FrameType.PushDone or FrameType.Resumed: _ = f.Index; break;
            case FrameType.Demand:
                for (var o = 0; o < f.Payload.Length; o += 8) _ = BinaryPrimitives.ReadUInt64LittleEndian(f.Payload[o..]);
                break;
        }
    }

    private static void Reheader(byte[] frame)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(8), FrameCodec.PayloadChecksum((FrameType)frame[2], frame.AsSpan(Wire.HeaderSize)));
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(12), Crc32C.Compute(frame.AsSpan(0, 12)));
    }

    /// <summary>Mutates a whole frame (header + payload) in one of the ways a broken or hostile peer would; returns what it did.</summary>
    private static (byte[] Bytes, string What) Mutate(Random r, byte[] frame)
    {
        var f = (byte[])frame.Clone();
        switch (r.Next(7))
        {
            case 0:
                var bit = r.Next(f.Length * 8);
                f[bit / 8] ^= (byte)(1 << (bit % 8));
                return (f, $"bit {bit} flipped");
            case 1:
                var len = r.Next(3) switch { 0 => (uint)r.NextInt64(0, uint.MaxValue + 1L), 1 => (uint)r.Next(0, 2 << 20), _ => (uint)Math.Max(0, f.Length - Wire.HeaderSize + r.Next(-9, 9)) };
                BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(4), len);
                BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(12), Crc32C.Compute(f.AsSpan(0, 12)));
                return (f, $"length {len}, header checksum fixed");
            case 2:
                f[2] = (byte)r.Next(256);
                Reheader(f);
                return (f, $"type 0x{f[2]:x2}, checksums fixed");
            case 3:
                var cut = r.Next(f.Length);
                return (f[..cut], $"cut at {cut} of {f.Length}");
            case 4:
                if (f.Length > Wire.HeaderSize)
                    for (var i = r.Next(1, 9); i > 0; i--) f[Wire.HeaderSize + r.Next(f.Length - Wire.HeaderSize)] = (byte)r.Next(256);
                Reheader(f);
                return (f, "payload garbage under valid checksums");
            case 5:
                var junk = new byte[r.Next(1, 40)];
                r.NextBytes(junk);
                return ([.. f, .. junk], $"{junk.Length} junk bytes after");
            default:
                f[r.Next(Math.Min(f.Length, Wire.HeaderSize))] = (byte)r.Next(256);
                return (f, "header byte replaced");
        }
    }

    [Fact]
    public void A_hundred_thousand_hostile_frames_end_in_a_frame_or_one_MigrationException_each()
    {
        var r = new Random(Seed);
        var channel = new FeedChannel(r);
        var reader = new FrameReader(channel, bufferSize: 1) { KeepDamagedPages = r.Next(2) == 0 };
        var regs = new Faultline.Kvm.Interop.KvmRegs { Rip = 0x1000 };
        // vCPU 0 carries the arm protocol's sections too (async-PF registration with outstanding faults, SDEI events)
        var sdei = new Faultline.Paging.AsyncPf.Arm.ArmSdeiRegistration(0x40000001,
            new Faultline.Paging.AsyncPf.Arm.SdeiState(false, [new(0, false, false, false, 0, 0), new(0x40000001, true, true, false, 0x2345, 77)]), default, default);
        var apf = new Faultline.Paging.AsyncPf.AsyncPfVcpuState(0x9001, 0xED, 3, [new(0x1000, 5, Faultline.Paging.AsyncPf.AsyncPfStage.Waiting)]);
        var vcpuState = VcpuStateMessage.Encode(1, [new VcpuState { Id = 0, Regs = regs, AsyncPf = apf, Sdei = sdei }, new VcpuState { Id = 1, Regs = regs }]);
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 7).Encode(hello);
        var helloFrame = FrameCodec.ToArray(FrameType.Hello, 0, hello);
        int decoded = 0, refused = 0, intact = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < Frames; i++)
        {
            var type = r.Next(20) == 0 ? (FrameType)r.Next(0x10, 256) : Types[r.Next(Types.Length)];
            var payload = Payload(r, type, vcpuState);
            var frame = new byte[Wire.HeaderSize + payload.Length];
            payload.CopyTo(frame, Wire.HeaderSize);
            FrameCodec.WriteHeader(frame, type, (byte)r.Next(4), (uint)payload.Length, FrameCodec.PayloadChecksum(type, payload));
            var mutated = r.Next(10) < 7;
            var (bytes, what) = mutated ? Mutate(r, frame) : (frame, "none");
            var afterHello = r.Next(4) != 0;   // most frames come after a good Hello, the rest as a connection's first bytes
            reader.Reset();
            reader.KeepDamagedPages = r.Next(2) == 0;
            channel.Load(afterHello ? [.. helloFrame, .. bytes] : bytes);
            try
            {
                if (afterHello) Assert.Equal(FrameType.Hello, reader.Read().Type);
                while (true)
                {
                    var f = reader.Read();
                    if (!mutated && afterHello && f.Type == type && f.Payload.SequenceEqual(payload)) intact++;
                    Consume(f);
                    decoded++;
                }
            }
            catch (MigrationException e)
            {
                if (e.Message != "fuzz closed the connection") refused++;   // else: a clean end after whole frames
                Assert.False(e.Message.Contains('\n'), $"seed {Seed}, case {i} ({what}): a message of several lines: {e.Message}");
            }
            catch (Exception e)
            {
                Assert.Fail($"seed {Seed}, case {i}: {type} frame, mutation: {what}: {e.GetType().Name}: {e.Message}");
            }
        }
        output.WriteLine($"seed {Seed}: {Frames} frames in {sw.Elapsed.TotalSeconds:0.0} s: {decoded} decoded, {refused} refused, {intact} unmutated intact");
        Assert.True(decoded > 0 && refused > 0, $"seed {Seed}: {decoded} decoded, {refused} refused");
        Assert.True(intact > 0, $"seed {Seed}: no unmutated frame decoded intact");
    }

    [Fact]
    public void Reading_valid_frames_allocates_nothing()
    {
        var r = new Random(Seed + 1);
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 7).Encode(hello);
        var ms = new MemoryStream();
        ms.Write(FrameCodec.ToArray(FrameType.Hello, 0, hello));
        var page = new byte[Wire.PageSize];
        for (var i = 0; i < 10_000; i++)
        {
            r.NextBytes(page.AsSpan(0, 16));
            var f = new byte[Wire.HeaderSize + Wire.PagePayloadSize];
            FrameCodec.WritePage(f, PageFlags.Push, (ulong)i, page);
            ms.Write(f);
        }
        var channel = new FeedChannel(r);
        channel.Load(ms.ToArray());
        var reader = new FrameReader(channel);
        reader.Read();
        reader.Read();   // JIT and first-use costs outside the count
        var before = GC.GetAllocatedBytesForCurrentThread();
        ulong sum = 0;
        for (var i = 2; i <= 10_000; i++) sum += reader.Read().Index;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(Enumerable.Range(1, 9_999).Sum(i => (long)i), (long)sum);
        Assert.Equal(0, allocated);
    }
}
