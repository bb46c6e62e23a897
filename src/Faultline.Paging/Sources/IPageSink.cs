using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Sources;

/// <summary>
/// Where a page source delivers: the engine's installer. Each page is installed exactly once, whoever brings it
/// first (a demand reply, a background push, a prefetch); a page present or being installed is skipped. Thread-safe,
/// never waits, allocation-free.
/// </summary>
public interface IPageSink
{
    PageTracker Tracker { get; }

    /// <summary>Installs one page unless it is present or being installed; true if this call installed it.</summary>
    bool Install(GuestAddress page, ReadOnlySpan<byte> bytes);

    /// <summary>
    /// <see cref="Install"/> for <paramref name="count"/> consecutive pages from <paramref name="first"/>
    /// (<paramref name="bytes"/>: count × 4096). Each maximal contiguous sub-run this call claims is installed with one
    /// ioctl. Sets <paramref name="installed"/>[i] for the pages this call installed and returns how many.
    /// </summary>
    int InstallRun(GuestAddress first, int count, ReadOnlySpan<byte> bytes, Span<bool> installed);

    /// <summary>
    /// <see cref="InstallRun"/> for pages known to be all zero (a snapshot's holes; <paramref name="zeros"/>: count × 4096
    /// zero bytes). Anonymous memory under a userfaultfd maps the shared zero page (UFFDIO_ZEROPAGE): nothing is
    /// allocated or copied until the guest writes.
    /// </summary>
    int InstallZeroRun(GuestAddress first, int count, ReadOnlySpan<byte> zeros, Span<bool> installed) => InstallRun(first, count, zeros, installed);

    /// <summary>The source can deliver no more pages: waiting fault paths return with <paramref name="error"/>.</summary>
    void Fail(Exception error);
}
