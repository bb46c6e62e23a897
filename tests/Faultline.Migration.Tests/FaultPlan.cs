using System.Buffers.Binary;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Tests;

public enum FaultKind { None, Disconnect, PageIndexOutOfRange, CorruptPageByte, TruncateMidFrame, CorruptEveryPage, StallMidFrame }

/// <summary>
/// What to break, and at which received Page / ZeroPage frame (with <paramref name="InRun"/>, at which PageRun frame).
/// Deterministic: printed by the tests that use it.
/// </summary>
public sealed record FaultPlan(FaultKind Kind, int AtPage, bool InRun = false)
{
    public override string ToString() => $"{Kind} at {(InRun ? "page run" : "page")} frame {AtPage}";
}

/// <summary>
/// A decorator on the receiving side of a channel that re-frames what arrives and breaks it as its plan says: cut
/// the link (both ends see it), send a page index out of range (a run's first index; checksum fixed up, so only the
/// index is wrong), flip a page byte (a run's last page; checksum left stale; or in every page frame from then on),
/// end the stream inside a frame, or stall inside one (half a frame, then nothing: a receive waits out its timeout).
/// </summary>
internal sealed class FaultyChannel(IByteChannel inner, FaultPlan plan) : IByteChannel
{
    private readonly FrameReader _reader = new(inner);
    private byte[] _pending = [];
    private int _pendingPos;
    private int _pages;
    private bool _ended, _stalled;
    private readonly ManualResetEventSlim _shut = new(false);

    public TimeSpan? ReceiveTimeout { get => inner.ReceiveTimeout; set => inner.ReceiveTimeout = value; }
    public long BytesSent => inner.BytesSent;
    public long BytesReceived => inner.BytesReceived;
    public string Peer => inner.Peer;
    public bool Fired { get; private set; }

    public void Send(ReadOnlySpan<byte> data) => inner.Send(data);

    public int Receive(Span<byte> buffer)
    {
        while (_pendingPos >= _pending.Length)
        {
            if (_stalled)
            {
                // as a socket with SO_RCVTIMEO does: nothing comes, the receive gives up after its timeout (none: never)
                _shut.Wait(ReceiveTimeout ?? Timeout.InfiniteTimeSpan);
                throw new LinkLostException($"no data from {Peer} for {ReceiveTimeout?.TotalSeconds:0.#} s");
            }
            if (_ended) return 0;
            var f = _reader.Read();
            var payload = f.Payload.ToArray();
            // a corruption is counted on frames that carry page bytes (a zero-page marker has none to damage)
            var counts = plan.InRun ? f.Type is FrameType.PageRun
                : plan.Kind is FaultKind.CorruptPageByte or FaultKind.CorruptEveryPage ? f.Type is FrameType.Page
                : f.Type is FrameType.Page or FrameType.ZeroPage;
            if (counts && (++_pages == plan.AtPage || (plan.Kind == FaultKind.CorruptEveryPage && _pages > plan.AtPage)) && plan.Kind != FaultKind.None)
            {
                Fired = true;
                switch (plan.Kind)
                {
                    case FaultKind.Disconnect:
                        inner.Shutdown();
                        _ended = true;
                        return 0;
                    case FaultKind.PageIndexOutOfRange:
                        BinaryPrimitives.WriteUInt64LittleEndian(payload, 1UL << 40);
                        break;
                    case FaultKind.CorruptPageByte or FaultKind.CorruptEveryPage:
                    {
                        var frame = FrameCodec.ToArray(f.Type, f.Flags, payload);
                        frame[^1] ^= 0x40;
                        _pending = frame; _pendingPos = 0;
                        continue;
                    }
                    case FaultKind.TruncateMidFrame:
                    {
                        var frame = FrameCodec.ToArray(f.Type, f.Flags, payload);
                        _pending = frame[..(frame.Length / 2)]; _pendingPos = 0;
                        _ended = true;
                        continue;
                    }
                    case FaultKind.StallMidFrame:
                    {
                        var frame = FrameCodec.ToArray(f.Type, f.Flags, payload);
                        _pending = frame[..(frame.Length / 2)]; _pendingPos = 0;
                        _stalled = true;
                        continue;
                    }
                }
            }
            _pending = FrameCodec.ToArray(f.Type, f.Flags, payload);
            _pendingPos = 0;
        }
        var n = Math.Min(buffer.Length, _pending.Length - _pendingPos);
        _pending.AsSpan(_pendingPos, n).CopyTo(buffer);
        _pendingPos += n;
        return n;
    }

    public void Shutdown() { _shut.Set(); inner.Shutdown(); }
    public void Dispose() { _shut.Set(); inner.Dispose(); }
}
