using System.Buffers.Binary;
using Faultline.Kvm.Interop;
using Faultline.Migration.Protocol;
using Faultline.Guest;

namespace Faultline.Migration.Tests;

/// <summary>Seeded property tests of the frame format: every failure message names its seed, so a run can be replayed.</summary>
public sealed class FramingPropertyTests
{
    private static readonly int BaseSeed = Environment.GetEnvironmentVariable("FAULTLINE_SEED") is { } s ? int.Parse(s) : 20261122;

    private sealed record Sample(FrameType Type, byte Flags, byte[] Payload);

    private static Sample RandomFrame(Random r)
    {
        switch (r.Next(10))
        {
            case 0:
            {
                var p = new byte[Wire.PagePayloadSize];
                r.NextBytes(p);
                return new Sample(FrameType.Page, (byte)(r.Next(2) == 0 ? PageFlags.Push : PageFlags.Demand), p);
            }
            case 1: return new Sample(FrameType.ZeroPage, (byte)PageFlags.Push, BitConverter.GetBytes((ulong)r.NextInt64()));
            case 2:
            {
                var p = new byte[8 * r.Next(1, Wire.MaxDemandIndices + 1)];
                r.NextBytes(p);
                return new Sample(FrameType.Demand, 0, p);
            }
            case 3:
            {
                var p = new byte[r.Next(0, 300)];
                r.NextBytes(p);
                return new Sample(FrameType.Abort, 0, p);
            }
            case 4: return new Sample(FrameType.Ready, 0, []);
            case 5:
            {
                var p = new byte[CompleteMessage.Size]; r.NextBytes(p);
                return new Sample(FrameType.Complete, 0, p);
            }
            case 6:
            {
                var p = new byte[SummaryMessage.Size]; r.NextBytes(p);
                return new Sample(FrameType.Summary, 0, p);
            }
            case 7:
            {
                var p = new byte[r.Next(VcpuStateMessage.MinSize, 5000)]; r.NextBytes(p);
                return new Sample(FrameType.VcpuState, 0, p);
            }
            case 8:
            {
                var p = new byte[PingMessage.Size];
                var count = (uint)r.Next(1, 100);
                new PingMessage((uint)r.Next((int)count), count, r.NextInt64()).Encode(p);
                return new Sample(r.Next(2) == 0 ? FrameType.Ping : FrameType.Pong, 0, p);
            }
            default:
            {
                var n = r.Next(1, Wire.MaxRunPages + 1);
                return new Sample(FrameType.PageRun, (byte)PageFlags.Push, RunPayload(r, (ulong)r.NextInt64(), n));
            }
        }
    }

    /// <summary>A page run's payload (pages random, some all zeros), as the source's encoder writes it.</summary>
    private static byte[] RunPayload(Random r, ulong first, int n)
    {
        var pages = new byte[n * Wire.PageSize];
        r.NextBytes(pages);
        for (var i = 0; i < n; i++) if (r.Next(8) == 0) pages.AsSpan(i * Wire.PageSize, Wire.PageSize).Clear();
        var frame = new byte[Wire.HeaderSize + Wire.RunPayloadSize(n)];
        Assert.Equal(frame.Length, FrameCodec.WritePageRun(frame, PageFlags.Push, first, n, pages));
        return frame[Wire.HeaderSize..];
    }

    private static (List<Sample> Frames, byte[] Stream, List<int> Boundaries) RandomStream(Random r, int count)
    {
        var frames = new List<Sample>();
        var ms = new MemoryStream();
        var bounds = new List<int> { 0 };
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 7).Encode(hello);
        frames.Add(new Sample(FrameType.Hello, 0, hello));
        ms.Write(FrameCodec.ToArray(FrameType.Hello, 0, hello));
        bounds.Add((int)ms.Length);
        for (var i = 0; i < count; i++)
        {
            var f = RandomFrame(r);
            frames.Add(f);
            ms.Write(FrameCodec.ToArray(f.Type, f.Flags, f.Payload));
            bounds.Add((int)ms.Length);
        }
        return (frames, ms.ToArray(), bounds);
    }

    [Fact]
    public void Random_frames_split_at_random_points_decode_to_the_same_frames()
    {
        for (var iter = 0; iter < 200; iter++)
        {
            var seed = BaseSeed + iter;
            var r = new Random(seed);
            var (frames, stream, _) = RandomStream(r, r.Next(1, 60));
            var reader = new FrameReader(new MemoryChannel(stream, r, maxPiece: r.Next(2, 20000)), bufferSize: r.Next(0, 3) == 0 ? 1 : 4 << 20);
            foreach (var expected in frames)
            {
                var f = reader.Read();
                Assert.True(f.Type == expected.Type && f.Flags == expected.Flags && f.Payload.SequenceEqual(expected.Payload),
                    $"seed {seed}: frame {reader.FramesRead} decoded as {f.Type}/{f.Flags}/{f.Payload.Length} bytes, expected {expected.Type}/{expected.Flags}/{expected.Payload.Length}");
            }
            var end = Assert.ThrowsAny<MigrationException>(() => reader.Read());
            Assert.True(end.Message.Contains("closed the connection"), $"seed {seed}: {end.Message}");
        }
    }

    [Fact]
    public void Any_flipped_byte_is_a_one_line_MigrationException_and_never_a_hang()
    {
        for (var iter = 0; iter < 300; iter++)
        {
            var seed = BaseSeed + 1000 + iter;
            var r = new Random(seed);
            var (frames, stream, _) = RandomStream(r, r.Next(1, 20));
            var at = r.Next(stream.Length);
            stream[at] ^= (byte)(1 << r.Next(8));
            var reader = new FrameReader(new MemoryChannel(stream, r));
            var e = Assert.ThrowsAny<MigrationException>(() => { for (var i = 0; i <= frames.Count; i++) reader.Read(); });
            Assert.False(e.Message.Contains('\n'), $"seed {seed}: multi-line message");
            Assert.True(e.Message is { Length: > 0 } && !e.Message.Contains("closed the connection\u0000"), $"seed {seed}: {e.Message}");
            Assert.True(reader.FramesRead <= frames.Count, $"seed {seed}: a corrupt frame was accepted");
        }
    }

    [Fact]
    public void A_stream_cut_inside_a_frame_says_so()
    {
        for (var iter = 0; iter < 200; iter++)
        {
            var seed = BaseSeed + 2000 + iter;
            var r = new Random(seed);
            var (frames, stream, bounds) = RandomStream(r, r.Next(1, 20));
            var cut = r.Next(1, stream.Length);
            if (bounds.Contains(cut)) cut--;
            var whole = bounds.Count(b => b > 0 && b <= cut);
            var reader = new FrameReader(new MemoryChannel(stream[..cut], r));
            for (var i = 0; i < whole; i++) reader.Read();
            var e = Assert.ThrowsAny<MigrationException>(() => reader.Read());
            Assert.True(e.Message.Contains("mid-frame"), $"seed {seed}: cut at {cut}: {e.Message}");
        }
    }

    [Theory]
    [InlineData(FrameType.Page, 4096u, "bad length")]
    [InlineData(FrameType.ZeroPage, 16u, "bad length")]
    [InlineData(FrameType.Demand, 12u, "bad length")]
    [InlineData(FrameType.Demand, 0u, "bad length")]
    [InlineData(FrameType.Abort, 100_000u, "bad length")]
    [InlineData(FrameType.VcpuState, 0x7FFF_FFF0u, "bad length")]
    [InlineData(FrameType.PageRun, 16u, "bad length")]                           // no pages
    [InlineData(FrameType.PageRun, 16u + 65 * 4100, "bad length")]               // one page more than a run may carry
    [InlineData(FrameType.PageRun, 16u + 2 * 4100 - 1, "bad length")]            // not a whole number of pages
    [InlineData(FrameType.PageRun, 16u + 4096, "bad length")]                    // a page without its checksum
    [InlineData(FrameType.Ping, 8u, "bad length")]
    [InlineData(FrameType.Pong, 24u, "bad length")]
    [InlineData(FrameType.Recover, 16u, "bad length")]                            // a bitmap of no bytes
    [InlineData(FrameType.Recovered, 8u, "bad length")]
    [InlineData(FrameType.AuthChallenge, 16u, "bad length")]
    [InlineData((FrameType)0x14, 16u, "unknown frame type")]                     // the first type after AuthProof
    [InlineData((FrameType)0x77, 8u, "unknown frame type")]
    public void A_well_checksummed_header_with_a_bad_type_or_length_is_refused_before_its_payload_is_awaited(FrameType type, uint length, string expected)
    {
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 1).Encode(hello);
        var header = new byte[Wire.HeaderSize];
        FrameCodec.WriteHeader(header, type, 0, length, 0);
        // no payload follows: a reader that trusted the length would wait for it forever
        var stream = FrameCodec.ToArray(FrameType.Hello, 0, hello).Concat(header).ToArray();
        var reader = new FrameReader(new BlockingAfterEndChannel(stream));
        reader.Read();
        var e = Assert.ThrowsAny<MigrationException>(() => reader.Read());
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_page_with_a_wrong_checksum_names_the_page()
    {
        var payload = new byte[Wire.PagePayloadSize];
        BinaryPrimitives.WriteUInt64LittleEndian(payload, 42);
        var frame = new byte[Wire.HeaderSize + Wire.PagePayloadSize];
        FrameCodec.WritePage(frame, PageFlags.Push, 42, payload.AsSpan(8));
        frame[^1] ^= 1;
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 1).Encode(hello);
        var reader = new FrameReader(new MemoryChannel([.. FrameCodec.ToArray(FrameType.Hello, 0, hello), .. frame], new Random(1)));
        reader.Read();
        var e = Assert.ThrowsAny<MigrationException>(() => reader.Read());
        Assert.Equal("checksum mismatch on page 42 from memory", e.Message);
    }

    private static FrameReader ReaderAfterHello(params byte[][] frames)
    {
        var hello = new byte[HelloMessage.Size];
        new HelloMessage(Wire.Version, ChannelRole.Main, 1).Encode(hello);
        var reader = new FrameReader(new MemoryChannel([.. FrameCodec.ToArray(FrameType.Hello, 0, hello), .. frames.SelectMany(f => f)], new Random(1)));
        reader.Read();
        return reader;
    }

    /// <summary>A run frame whose header checksum is recomputed over <paramref name="payload"/>'s preamble as its length implies, so only the field under test is wrong.</summary>
    private static byte[] RunFrameWith(byte[] payload)
    {
        var frame = new byte[Wire.HeaderSize + payload.Length];
        payload.CopyTo(frame.AsSpan(Wire.HeaderSize));
        var n = Wire.RunPagesOf((uint)payload.Length);
        FrameCodec.WriteHeader(frame, FrameType.PageRun, (byte)PageFlags.Push, (uint)payload.Length, Crc32C.Compute(payload.AsSpan(0, Wire.RunPreambleSize(n))));
        return frame;
    }

    [Fact]
    public void A_page_run_decodes_to_its_pages_and_each_page_is_checked_on_its_own()
    {
        var r = new Random(BaseSeed);
        var payload = RunPayload(r, 1000, 5);
        var reader = ReaderAfterHello(RunFrameWith(payload));
        var f = reader.Read();
        Assert.Equal(FrameType.PageRun, f.Type);
        Assert.Equal(1000UL, f.Index);
        Assert.Equal(5, f.RunCount);
        Assert.True(f.RunPages.SequenceEqual(payload.AsSpan(Wire.RunPreambleSize(5))));
        for (var i = 0; i < 5; i++)   // the per-page checksum is CRC-32C of the page's 4096 bytes
            Assert.Equal(Crc32C.Compute(f.RunPages.Slice(i * Wire.PageSize, Wire.PageSize)), BinaryPrimitives.ReadUInt32LittleEndian(f.Payload[(16 + 4 * i)..]));

        // a flipped byte in the third page: that page is named
        var bad = (byte[])payload.Clone();
        bad[Wire.RunPreambleSize(5) + 2 * Wire.PageSize + 17] ^= 4;
        var e = Assert.ThrowsAny<MigrationException>(() => ReaderAfterHello(RunFrameWith(bad)).Read());
        Assert.Equal("checksum mismatch on page 1002 from memory", e.Message);

        // a flipped byte in the preamble (here: the first index) fails the header's payload checksum
        var frame = RunFrameWith(payload);
        frame[Wire.HeaderSize + 1] ^= 1;
        e = Assert.ThrowsAny<MigrationException>(() => ReaderAfterHello(frame).Read());
        Assert.Equal("checksum mismatch on a PageRun frame from memory", e.Message);
    }

    [Fact]
    public void A_page_run_whose_count_or_reserved_bytes_disagree_is_refused_even_with_good_checksums()
    {
        var r = new Random(BaseSeed + 1);
        var payload = RunPayload(r, 7, 4);
        BinaryPrimitives.WriteUInt16LittleEndian(payload.AsSpan(8), 3);
        var e = Assert.ThrowsAny<MigrationException>(() => ReaderAfterHello(RunFrameWith(payload)).Read());
        Assert.Equal("corrupt stream from memory: PageRun frame says 3 pages but carries 4", e.Message);

        payload = RunPayload(r, 7, 4);
        payload[13] = 1;
        e = Assert.ThrowsAny<MigrationException>(() => ReaderAfterHello(RunFrameWith(payload)).Read());
        Assert.Equal("corrupt stream from memory: PageRun frame with non-zero reserved bytes", e.Message);
    }

    [Fact]
    public void Ping_and_pong_frames_round_trip_and_a_probe_outside_its_burst_is_refused()
    {
        var p = new byte[PingMessage.Size];
        new PingMessage(6, 50, -123456789).Encode(p);
        var reader = ReaderAfterHello(FrameCodec.ToArray(FrameType.Ping, 0, p), FrameCodec.ToArray(FrameType.Pong, 0, p));
        var ping = reader.Read();
        Assert.Equal(FrameType.Ping, ping.Type);
        Assert.Equal(new PingMessage(6, 50, -123456789), PingMessage.Decode(ping.Payload, "memory"));
        var pong = reader.Read();
        Assert.Equal(FrameType.Pong, pong.Type);
        Assert.True(pong.Payload.SequenceEqual(p));

        foreach (var (seq, count) in new[] { (0u, 0u), (5u, 5u), (0u, PingMessage.MaxCount + 1) })
        {
            new PingMessage(seq, count, 1).Encode(p);
            var e = Assert.ThrowsAny<MigrationException>(() => PingMessage.Decode(p, "memory"));
            Assert.Equal($"corrupt stream from memory: ping {seq} of a burst of {count}", e.Message);
        }
        // a corrupt byte in a probe is caught by the payload checksum like in any frame
        var frame = FrameCodec.ToArray(FrameType.Ping, 0, p);
        frame[^3] ^= 0x10;
        var e2 = Assert.ThrowsAny<MigrationException>(() => ReaderAfterHello(frame).Read());
        Assert.Equal("checksum mismatch on a Ping frame from memory", e2.Message);
    }

    [Fact]
    public void The_summary_carries_the_sources_demand_path_policy()
    {
        var sha = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        foreach (var policy in new[] { DemandPathPolicy.Nice, DemandPathPolicy.RealTime })
        {
            var b = new byte[SummaryMessage.Size];
            new SummaryMessage(sha, 1, 2, 3, 4, 5, 6, 7, policy).Encode(b);
            var back = SummaryMessage.Decode(b);
            Assert.Equal(policy, back.SourcePolicy);
            Assert.Equal((1UL, 2UL, 7L), (back.PagesDemand, back.PagesPushed, back.PauseToStateSentNs));
            Assert.True(b.AsSpan(89).IndexOfAnyExcept((byte)0) < 0, "reserved bytes must be zero");
        }
    }

    [Fact]
    public void Garbage_at_the_start_means_the_peer_is_not_Faultline()
    {
        var reader = new FrameReader(new MemoryChannel("SSH-2.0-OpenSSH_9.6\r\n"u8.ToArray(), new Random(1)));
        var e = Assert.ThrowsAny<MigrationException>(() => reader.Read());
        Assert.StartsWith("memory is not a Faultline migration peer", e.Message);
    }

    [Fact]
    public void Crc32C_has_the_standard_check_value_and_both_paths_agree()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0xE3069283u, Crc32C.ComputeSoftware("123456789"u8));
        var r = new Random(BaseSeed);
        for (var i = 0; i < 500; i++)
        {
            var b = new byte[r.Next(0, 10000)];
            r.NextBytes(b);
            var split = r.Next(0, b.Length + 1);
            Assert.True(Crc32C.ComputeSoftware(b) == Crc32C.Compute(b), $"seed {BaseSeed}: length {b.Length}");
            Assert.True(Crc32C.Append(Crc32C.Compute(b.AsSpan(0, split)), b.AsSpan(split)) == Crc32C.Compute(b), $"seed {BaseSeed}: split {split}/{b.Length}");
        }
    }

    [Fact]
    public void Vcpu_state_round_trips_keeps_unknown_optional_sections_and_refuses_unknown_mandatory_ones()
    {
        var regs = new KvmRegs { Rip = 0x40123, Rax = 7, Rflags = 2 };
        var sregs = new KvmSregs { Cr0 = 0x80010001, Cr3 = 0x1000, Efer = 0x500 };
        var events = new KvmVcpuEvents { InterruptShadow = 1, Flags = 4 };
        var states = new[]
        {
            new VcpuState { Id = 0, Regs = regs, Sregs = sregs, Events = events },
            new VcpuState { Id = 1, Regs = regs, Sregs = sregs, Events = events, UnknownOptional = [(0x0200, [1, 2, 3])] },
        };
        var bytes = VcpuStateMessage.Encode(123456789, states);
        var (pause, back) = VcpuStateMessage.Decode(bytes, 2);
        Assert.Equal(123456789, pause);
        Assert.Equal(regs.Rip, back[0].Regs.Rip);
        Assert.Equal(sregs.Efer, back[1].Sregs.Efer);
        Assert.Equal(events.InterruptShadow, back[0].Events.InterruptShadow);
        Assert.Empty(back[0].UnknownOptional);
        Assert.Equal(new byte[] { 1, 2, 3 }, back[1].UnknownOptional.Single().Data);

        // the same optional section without its optional flag: a later version's mandatory state this one can't restore
        var i = bytes.AsSpan().IndexOf(new byte[] { 0x00, 0x02, 0x01, 0x00 });
        bytes[i + 2] = 0;
        var e = Assert.ThrowsAny<MigrationException>(() => VcpuStateMessage.Decode(bytes, 2));
        Assert.Contains("not understood by this version", e.Message);
        Assert.ThrowsAny<MigrationException>(() => VcpuStateMessage.Decode(bytes.AsSpan(0, bytes.Length - 5), 2));
        Assert.ThrowsAny<MigrationException>(() => VcpuStateMessage.Decode(VcpuStateMessage.Encode(1, states), 3));
    }

    [Fact]
    public void The_arm_protocols_sdei_section_round_trips_beside_the_async_pf_one_and_damage_is_one_MigrationException()
    {
        var cs = new KvmSegment { Selector = 0x08, L = 1, Present = 1, S = 1, Type = 11 };
        var ss = new KvmSegment { Selector = 0x10, Db = 1, Present = 1, S = 1, Type = 3 };
        var sdei = new Faultline.Paging.AsyncPf.Arm.ArmSdeiRegistration(0x40000001,
            new Faultline.Paging.AsyncPf.Arm.SdeiState(false, [new(0, false, false, false, 0, 0), new(0x40000001, true, true, false, 0x2345, 77)]), cs, ss);
        var apf = new Faultline.Paging.AsyncPf.AsyncPfVcpuState(0x9000 | 1, 0xED, 12,
            [new(0x1000, 5, Faultline.Paging.AsyncPf.AsyncPfStage.Waiting), new(0x2000, 9, Faultline.Paging.AsyncPf.AsyncPfStage.Delivered)]);
        var bytes = VcpuStateMessage.Encode(5, [new VcpuState { Id = 0, AsyncPf = apf, Sdei = sdei }]);
        var back = VcpuStateMessage.Decode(bytes, 1).Vcpus[0];
        Assert.Equal(sdei.AsyncPfEvent, back.Sdei!.AsyncPfEvent);
        Assert.Equal(sdei.Events.Events, back.Sdei.Events.Events);
        Assert.False(back.Sdei.Events.Masked);
        Assert.Equal(cs.Selector, back.Sdei.HandlerCs.Selector);
        Assert.Equal(ss.Selector, back.Sdei.HandlerSs.Selector);
        Assert.Equal(1, back.Sdei.HandlerCs.L);
        Assert.Equal(apf.EnableMsr, back.AsyncPf!.EnableMsr);
        Assert.Equal(apf.Outstanding, back.AsyncPf.Outstanding);
        // every byte of the frame damaged in turn, and every truncation: a state or one MigrationException, nothing else
        var r = new Random(BaseSeed);
        for (var i = 0; i < bytes.Length; i++)
        {
            var d = (byte[])bytes.Clone();
            d[i] ^= (byte)r.Next(1, 256);
            try { VcpuStateMessage.Decode(d, 1); } catch (MigrationException) { }
            Assert.ThrowsAny<MigrationException>(() => VcpuStateMessage.Decode(bytes.AsSpan(0, i), 1));
        }
        // a section shorter than its header, and one whose event count disagrees with its length
        Assert.Contains("SDEI section is truncated", Assert.ThrowsAny<MigrationException>(() => GuestStateCodec.DecodeSdei(new byte[20], 0)).Message);
        var counted = GuestStateCodec.Encode(sdei);
        counted[5] = 3;
        Assert.Contains("for 3 events", Assert.ThrowsAny<MigrationException>(() => GuestStateCodec.DecodeSdei(counted, 0)).Message);
    }

    /// <summary>Serves its bytes, then blocks on the next Receive (a live peer that stopped talking): proves the reader never waits on a bad length.</summary>
    private sealed class BlockingAfterEndChannel(byte[] data) : Faultline.Migration.Transport.IByteChannel
    {
        private int _pos;
        public TimeSpan? ReceiveTimeout { get; set; }
        public long BytesSent => 0;
        public long BytesReceived => _pos;
        public string Peer => "peer";
        public void Send(ReadOnlySpan<byte> d) { }
        public int Receive(Span<byte> buffer)
        {
            if (_pos >= data.Length) throw new TimeoutException("reader waited for bytes a bad length promised");
            var n = Math.Min(buffer.Length, data.Length - _pos);
            data.AsSpan(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }
        public void Shutdown() { }
        public void Dispose() { }
    }
}
