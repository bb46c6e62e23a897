using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Protocol;

/// <summary>
/// Decodes frames from a byte channel through one buffer (no allocation per frame): reads as much as the socket has,
/// parses in place, compacts only when a frame straddles the buffer's end. Everything is checked before it is used:
/// sync, header checksum, type, the type's length limits, payload checksum. Any violation, and the stream ending
/// inside a frame, is a <see cref="MigrationException"/> with a one-line message; the reader never waits for bytes
/// a bad length promised. One thread reads.
/// </summary>
public sealed class FrameReader
{
    private readonly IByteChannel _ch;
    private readonly byte[] _buf;
    private int _pos, _end;
    private bool _first = true;

    public long FramesRead { get; private set; }
    /// <summary>
    /// Once a frame has begun on a channel without a receive timeout of its own (the urgent channel waits for demands
    /// without limit), the rest of it must come within this: a peer stalling mid-frame is a failure, not a hang.
    /// </summary>
    public TimeSpan StallTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>
    /// Page frames (Page, PageRun) whose header is sound but whose payload fails its checksum are returned marked
    /// <see cref="Frame.Damaged"/> instead of failing the stream: the frame's length was trusted (header checksum), so
    /// the stream is still in step, and the destination can ask for the pages again. Off: a checksum mismatch throws.
    /// </summary>
    public bool KeepDamagedPages { get; set; }
    private volatile bool _damageNext;
    /// <summary>
    /// Fault injection (<c>--inject corrupt</c>), any thread: the next Page or PageRun frame gets its last payload byte
    /// flipped in the buffer before its checksum is checked, as a link that damaged it would; the check then finds it.
    /// </summary>
    public void DamageNextPageFrame() => _damageNext = true;
    public string Peer => _ch.Peer;

    public FrameReader(IByteChannel channel, int bufferSize = 2 << 20)
    {
        _ch = channel;
        _buf = GC.AllocateUninitializedArray<byte>(Math.Max(bufferSize, Wire.HeaderSize + Wire.MaxPayload), pinned: true);
    }

    /// <summary>Test seam (fuzzing): forgets every buffered byte and starts over as at a connection's first frame.</summary>
    internal void Reset()
    {
        _pos = _end = 0;
        _first = true;
    }

    /// <summary>Reads the next frame (blocking). Its payload is valid until the next call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    public Frame Read()
    {
        // a peer's first two bytes tell whether it speaks this protocol at all (`echo hello | nc` sends six and closes)
        if (_first)
        {
            Fill(2, 0);
            var first = BinaryPrimitives.ReadUInt16LittleEndian(_buf.AsSpan(_pos));
            // 0x16 0x03: a TLS record (a client hello) where this end expects frames in the clear
            if (first != Wire.Sync) throw Bad(first == 0x0316 ? "bad frame sync 0x0316: it speaks TLS, this end runs without --tls" : $"bad frame sync 0x{first:x4}");
        }
        Fill(Wire.HeaderSize, 0);
        var h = new ReadOnlySpan<byte>(_buf, _pos, Wire.HeaderSize);
        var sync = BinaryPrimitives.ReadUInt16LittleEndian(h);
        if (sync != Wire.Sync) throw Bad($"bad frame sync 0x{sync:x4}");
        var headerCrc = BinaryPrimitives.ReadUInt32LittleEndian(h[12..]);
        if (Crc32C.Compute(h[..12]) != headerCrc) throw Bad("bad header checksum");
        var type = (FrameType)h[2];
        var flags = h[3];
        var length = BinaryPrimitives.ReadUInt32LittleEndian(h[4..]);
        var crc = BinaryPrimitives.ReadUInt32LittleEndian(h[8..]);
        switch (Wire.LengthAllowed(type, length))
        {
            case null: throw Bad($"unknown frame type 0x{(byte)type:x2}");
            case false: throw Bad($"{type} frame with bad length {length}");
        }
        if (_first && type != FrameType.Hello && type != FrameType.Abort) throw Bad($"first frame is {type}, not Hello");
        Fill(Wire.HeaderSize + (int)length, Wire.HeaderSize);
        if (_damageNext && type is FrameType.Page or FrameType.PageRun && !_first)
        {
            _damageNext = false;
            _buf[_pos + Wire.HeaderSize + (int)length - 1] ^= 0x5A;
        }
        var payload = new ReadOnlySpan<byte>(_buf, _pos + Wire.HeaderSize, (int)length);
        // a checksum that fails: the payload was damaged on its way (the header, and so the length, are sound)
        var damage = type == FrameType.PageRun ? CheckRun(payload, crc)
            : Crc32C.Compute(payload) == crc ? null
            : type is FrameType.Page ? $"checksum mismatch on page {BinaryPrimitives.ReadUInt64LittleEndian(payload)} from {Peer}"
            : $"checksum mismatch on a {type} frame from {Peer}";
        if (damage is not null && !(KeepDamagedPages && type is FrameType.Page or FrameType.PageRun && !_first)) throw new MigrationException(damage);
        _pos += Wire.HeaderSize + (int)length;
        _first = false;
        FramesRead++;
        return new Frame(type, flags, payload, damage is not null);
    }

    /// <summary>
    /// A page run: the preamble (index, count, reserved, per-page checksums) against the header's checksum, the count
    /// against the length, the reserved bytes zero, then every page against its own checksum. Returns what failed its
    /// checksum (null: nothing); a run that is inconsistent under sound checksums throws.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    private string? CheckRun(ReadOnlySpan<byte> payload, uint crc)
    {
        var n = Wire.RunPagesOf((uint)payload.Length);
        var pre = Wire.RunPreambleSize(n);
        if (Crc32C.Compute(payload[..pre]) != crc) return $"checksum mismatch on a PageRun frame from {Peer}";
        var count = BinaryPrimitives.ReadUInt16LittleEndian(payload[8..]);
        if (count != n) throw Bad($"PageRun frame says {count} pages but carries {n}");
        if (BinaryPrimitives.ReadUInt16LittleEndian(payload[10..]) != 0 || BinaryPrimitives.ReadUInt32LittleEndian(payload[12..]) != 0)
            throw Bad("PageRun frame with non-zero reserved bytes");
        var first = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        for (var i = 0; i < n; i++)
            if (Crc32C.Compute(payload.Slice(pre + i * Wire.PageSize, Wire.PageSize)) != BinaryPrimitives.ReadUInt32LittleEndian(payload[(Wire.RunHeaderSize + 4 * i)..]))
                return $"checksum mismatch on page {unchecked(first + (ulong)i)} from {Peer}";
        return null;
    }

    private MigrationException Bad(string what) => _first
        ? new MigrationException($"{Peer} is not a Faultline migration peer ({what})")
        : new MigrationException($"corrupt stream from {Peer}: {what}");

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    private void Fill(int need, int headerBytesDone)
    {
        if (_end - _pos >= need) return;
        if (_buf.Length - _pos < need)
        {
            var n = _end - _pos;
            Buffer.BlockCopy(_buf, _pos, _buf, 0, n);
            _pos = 0; _end = n;
        }
        // inside a frame (part of it is here) on a channel that waits without limit (the urgent one waits for demands):
        // the rest must come within the stall timeout. A channel with a timeout of its own is bounded by that.
        TimeSpan? old = null;
        long since = 0;
        if (_end - _pos > 0 && _ch.ReceiveTimeout is null)
        {
            old = TimeSpan.Zero;
            _ch.ReceiveTimeout = StallTimeout;
            since = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        try { Receive(need, headerBytesDone); }
        catch (MigrationException) when (old is not null && System.Diagnostics.Stopwatch.GetElapsedTime(since) >= StallTimeout * 0.9)
        {
            throw new LinkLostException($"{Peer} stalled mid-frame: {_end - _pos} of {need} bytes, nothing more for {StallTimeout.TotalSeconds:0.#} s");
        }
        finally
        {
            if (old is { } o) _ch.ReceiveTimeout = o == TimeSpan.Zero ? null : o;
        }
    }

    private void Receive(int need, int headerBytesDone)
    {
        while (_end - _pos < need)
        {
            var got = _ch.Receive(_buf.AsSpan(_end));
            if (got == 0)
            {
                var have = _end - _pos;
                if (have == 0 && headerBytesDone == 0) throw new LinkLostException($"{Peer} closed the connection");
                throw new LinkLostException(headerBytesDone == 0
                    ? $"{Peer} closed the connection mid-frame ({have} of {Wire.HeaderSize} header bytes)"
                    : $"{Peer} closed the connection mid-frame ({have - Wire.HeaderSize} of {need - Wire.HeaderSize} payload bytes)");
            }
            _end += got;
        }
    }
}
