using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Source;

/// <summary>
/// The background push on the main channel: every page not yet sent, in batches of frames written with one send.
/// Order: sequential from <see cref="SourceOptions.PushStartPage"/>, wrapping; after each demand request the push
/// jumps to the page after the demanded one and sends a prefetch window from there (a guest that faulted at p
/// usually wants p+1 next, QEMU does the same), then honours the next hint.
/// </summary>
internal sealed class PagePusher(GuestRegion ram, SentPages sent, PeerConnection main, int windowPages, ulong startPage)
{
    private const int BatchBytes = 128 * 1024;
    private long _hint = -1;

    public ulong Pushed { get; private set; }
    public ulong Zero { get; private set; }

    /// <summary>Demand server: page <paramref name="index"/> was just demanded.</summary>
    public void Hint(ulong index) => Volatile.Write(ref _hint, (long)index);

    public void Run(CancellationToken ct)
    {
        var buf = GC.AllocateUninitializedArray<byte>(BatchBytes + Wire.HeaderSize + Wire.PagePayloadSize, pinned: true);
        var used = 0;
        var cursor = startPage;
        var windowLeft = 0;
        while (!ct.IsCancellationRequested)
        {
            if (windowLeft <= 0)
            {
                var h = Interlocked.Exchange(ref _hint, -1);
                if (h >= 0) { cursor = (ulong)h + 1; windowLeft = windowPages; }
            }
            var next = sent.NextUnsent(cursor);
            if (next < 0) break;
            var idx = (ulong)next;
            cursor = idx + 1;
            windowLeft--;
            if (!sent.TryClaim(idx, SentPages.Pushed)) continue;
            var page = ram.Span(ram.Base + (idx << GuestAddress.PageShift), Wire.PageSize);
            used += FrameCodec.WritePageOrZero(buf.AsSpan(used), PageFlags.Push, idx, page, out var zero);
            Pushed++;
            if (zero) Zero++;
            if (used >= BatchBytes) { main.SendRaw(buf.AsSpan(0, used)); used = 0; }
        }
        used += FrameCodec.WriteIndex(buf.AsSpan(used), FrameType.PushDone, 0, Pushed);
        main.SendRaw(buf.AsSpan(0, used));
    }
}
