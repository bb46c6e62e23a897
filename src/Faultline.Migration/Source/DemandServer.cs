using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Source;

/// <summary>
/// The urgent queue: reads demand requests from the urgent channel and answers each at once, on that channel, with
/// the page (or a zero marker), also when the push sent it already (it is still in flight behind the push's backlog,
/// see <see cref="SentPages"/>). Runs on its own thread, so a demanded page never waits behind the push.
/// </summary>
internal sealed class DemandServer(GuestRegion ram, SentPages sent, PagePusher pusher)
{
    public ulong Requests { get; private set; }
    public ulong AlreadySent { get; private set; }
    public ulong Resent { get; private set; }
    public ulong Served { get; private set; }
    public ulong Zero { get; private set; }

    /// <summary>Serves <paramref name="urgent"/> until the destination closes it (normal once it has every page; after a rejoin, on the new one).</summary>
    public void Run(PeerConnection urgent, Func<bool> completeReceived)
    {
        var buf = GC.AllocateUninitializedArray<byte>(Wire.MaxDemandIndices * (Wire.HeaderSize + Wire.PagePayloadSize), pinned: true);
        while (true)
        {
            Frame f;
            try { f = urgent.Read(); }
            catch (MigrationException) when (completeReceived()) { return; }
            if (f.Type != FrameType.Demand) throw new MigrationException($"protocol error: {f.Type} frame on the urgent channel");
            if (completeReceived()) continue;   // the destination has every page: a demand that crossed its Complete is moot
            var used = 0;
            var p = f.Payload;
            for (var o = 0; o < p.Length; o += 8)
            {
                var idx = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(p[o..]);
                if (idx >= sent.Pages) throw new MigrationException($"destination demanded page {idx}, out of range (guest RAM has {sent.Pages} pages)");
                Requests++;
                DemandTrace.Hop(idx, "src-rx");
                pusher.Hint(idx);
                var first = sent.TryClaim(idx, SentPages.Demanded);
                if (!first)
                {
                    // in flight behind the push, or lost on the way (a damaged frame the destination dropped): sent again
                    AlreadySent++;
                    sent.TryClaimResend(idx);
                    Resent++;
                }
                var page = ram.Span(ram.Base + (idx << GuestAddress.PageShift), Wire.PageSize);
                used += FrameCodec.WritePageOrZero(buf.AsSpan(used), PageFlags.Demand, idx, page, out var zero);
                if (!first) continue;
                Served++;
                if (zero) Zero++;
            }
            if (used > 0) urgent.SendRaw(buf.AsSpan(0, used));
            if (DemandTrace.On && used > 0) DemandTrace.Hop(System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(p), "src-sent");
        }
    }
}
