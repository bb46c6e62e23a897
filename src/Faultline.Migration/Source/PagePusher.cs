using System.Runtime.CompilerServices;
using Faultline.Kvm.Io;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;
using Faultline.Migration.Transport;

namespace Faultline.Migration.Source;

/// <summary>
/// The background push on the main channel: every page not yet sent, in batches of frames written with one gather
/// send (sendmsg): the small parts of each frame (headers, a run's preamble with its pages' checksums, zero-page
/// markers) are written into a batch buffer, and the pages themselves go from guest RAM, one segment per frame, never
/// copied in user space (the guest is paused: they do not change under the send).
/// Consecutive non-zero pages the push claims travel as one <see cref="FrameType.PageRun"/> of up to
/// <c>runPages</c> pages (the destination installs a run with one ioctl); a page of zeros is a ZeroPage marker and
/// ends a run; a lone page is a Page frame. Order: sequential from <see cref="SourceOptions.PushStartPage"/>,
/// wrapping; after each demand request the push jumps to the page after the demanded one and sends a prefetch window
/// from there (a guest that faulted at p usually wants p+1 next, QEMU does the same), then honours the next hint.
/// With a bandwidth cap the push sleeps whenever it is more than a millisecond ahead of the cap's schedule.
/// </summary>
internal sealed class PagePusher(GuestRegion ram, SentPages sent, int windowPages, ulong startPage, int runPages = Wire.MaxRunPages, long bytesPerSecond = 0)
{
    /// <summary>Wire bytes per send.</summary>
    private const int BatchBytes = 256 * 1024;
    /// <summary>The most a frame writes into the batch buffer: a run's header and preamble.</summary>
    private const int MaxFrameHead = Wire.HeaderSize + Wire.RunHeaderSize + 4 * Wire.MaxRunPages;
    private readonly int _runPages = Math.Clamp(runPages, 1, Wire.MaxRunPages);
    private long _hint = -1;

    public ulong Pushed { get; private set; }
    public ulong Zero { get; private set; }
    /// <summary>PageRun frames sent, and the pages they carried.</summary>
    public ulong Runs { get; private set; }
    public ulong RunPages { get; private set; }

    /// <summary>Demand server: page <paramref name="index"/> was just demanded.</summary>
    public void Hint(ulong index) => Volatile.Write(ref _hint, (long)index);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot per page: full JIT at first call, no tier-0 code inside the transfer
    /// <summary>Pushes every unsent page on <paramref name="main"/>, then PushDone. After a rejoin it runs again on the new connection, from the start page, for the pages sent again.</summary>
    public void Run(PeerConnection main, CancellationToken ct)
    {
        // the frames' own bytes (pinned: the gather list points into it); pages stay where they are
        var buf = GC.AllocateUninitializedArray<byte>(BatchBytes + MaxFrameHead, pinned: true);
        var iov = new IoVecList();
        var used = 0;       // bytes written into buf
        var listed = 0;     // buf[..listed] is in the gather list already
        var pageBytes = 0;  // page bytes in the gather list
        var cursor = startPage;
        var windowLeft = 0;
        var pace = new Pacer(bytesPerSecond);
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
            var page = PageAt(idx, 1);
            if (IsZero(page))
            {
                used += FrameCodec.WriteIndex(buf.AsSpan(used), FrameType.ZeroPage, (byte)PageFlags.Push, idx);
                Zero++;
                Pushed++;
            }
            else
            {
                // extend over the following pages nobody has sent yet, up to a zero page or the run limit
                var n = 1;
                while (n < _runPages && idx + (ulong)n < sent.Pages && sent.IsUnsent(idx + (ulong)n) && !IsZero(PageAt(idx + (ulong)n, 1))
                       && sent.TryClaim(idx + (ulong)n, SentPages.Pushed))
                    n++;
                var pages = PageAt(idx, n);
                if (n == 1) used += FrameCodec.WritePageHeader(buf.AsSpan(used), PageFlags.Push, idx, pages);
                else
                {
                    used += FrameCodec.WritePageRunHeader(buf.AsSpan(used), PageFlags.Push, idx, n, pages);
                    Runs++;
                    RunPages += (ulong)n;
                }
                iov.Add(buf.AsSpan(listed, used - listed));   // the frames since the last pages, up to this frame's head
                iov.Add(pages);                                // then this frame's pages, from guest RAM
                listed = used;
                pageBytes += pages.Length;
                Pushed += (ulong)n;
                cursor = idx + (ulong)n;
                windowLeft -= n - 1;
            }
            // a frame adds at most two segments, and the flush one more
            if (used + pageBytes >= BatchBytes || iov.Free < 3)
            {
                iov.Add(buf.AsSpan(listed, used - listed));
                main.SendGather(iov);
                pace.Sent(used + pageBytes, ct);
                used = listed = pageBytes = 0;
            }
        }
        used += FrameCodec.WriteIndex(buf.AsSpan(used), FrameType.PushDone, 0, Pushed);
        iov.Add(buf.AsSpan(listed, used - listed));
        main.SendGather(iov);
    }

    /// <summary>Holds a sender to a byte rate: after each send it sleeps off whatever it is ahead of the rate by 1 ms or more.</summary>
    private struct Pacer(long bytesPerSecond)
    {
        private long _start, _bytes;

        public void Sent(int bytes, CancellationToken ct)
        {
            if (bytesPerSecond <= 0) return;
            if (_start == 0) _start = System.Diagnostics.Stopwatch.GetTimestamp();
            _bytes += bytes;
            var due = _bytes * 1000.0 / bytesPerSecond;                                      // ms since the start
            var ahead = due - System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalMilliseconds;
            if (ahead >= 1) ct.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(ahead));
        }
    }

    private ReadOnlySpan<byte> PageAt(ulong index, int pages) => ram.Span(ram.Base + (index << GuestAddress.PageShift), pages * Wire.PageSize);

    private static bool IsZero(ReadOnlySpan<byte> page) => page.IndexOfAnyExcept((byte)0) < 0;
}
