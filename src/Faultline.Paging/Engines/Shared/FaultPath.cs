using System.Diagnostics;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Shared;

/// <summary>
/// What every fault path does with a missing page, whichever thread it runs on (a reader, a vCPU): ask the source once
/// (the first to mark the page requested asks; later faults on the same page only wait), then wait on the tracker until
/// whoever brings the bytes has installed them. An immediate source has installed it before <see cref="Resolve"/>
/// waits; a remote one completes later, from its receiver. With the page cache filled up front (shmem), there is nothing
/// to fetch: the fault path maps the page itself.
/// </summary>
internal sealed class FaultPath : IRerequest
{
    private readonly PageTracker _tracker;
    private readonly IPageSource _source;
    private readonly PageInstaller _installer;
    private readonly bool _inPlace;
    private readonly TimeSpan _timeout;

    /// <param name="inPlace">The page's bytes are in place already (a populated page cache): install without asking.</param>
    public FaultPath(PageTracker tracker, IPageSource source, PageInstaller installer, bool inPlace, TimeSpan timeout)
    {
        _tracker = tracker; _source = source; _installer = installer; _inPlace = inPlace; _timeout = timeout;
    }

    public IPageSource Source => _source;

    /// <summary>How long a fault path spins before it blocks: about as long as the source takes, within 20 µs..2 ms.</summary>
    public long SpinTicks
    {
        get
        {
            var us = FaultWait.SpinMicroseconds(_source.ExpectedLatency);
            return (long)(us * Stopwatch.Frequency / 1e6);
        }
    }

    /// <summary>
    /// Makes page <paramref name="index"/> present. True when it was missing on arrival (this call asked or waited),
    /// false when it was present already. Throws <see cref="PageUnavailableException"/> when the source failed or the
    /// page did not come within the timeout.
    /// </summary>
    public bool Resolve(ulong index)
    {
        if (_tracker.IsPresent(index)) return false;
        if (!RequestOnly(index)) WaitFor(index);
        return true;
    }

    /// <summary>
    /// Asks for page <paramref name="index"/> without waiting for it (an async page fault): the first to mark it
    /// requested asks the source. True when it is present on return (already, or installed in place or by an
    /// immediate source).
    /// </summary>
    public bool RequestOnly(ulong index)
    {
        var t = _tracker;
        if (t.IsPresent(index)) return true;
        if (_inPlace) _installer.InstallInPlace(index);
        else if (t.TryRequest(index)) _source.Request(t.AddressOf(index));
        return t.IsPresent(index);
    }

    /// <summary>Waits until page <paramref name="index"/> is present (asking again if its request was lost). Throws as <see cref="Resolve"/>.</summary>
    public void WaitFor(ulong index)
    {
        var t = _tracker;
        if (!t.WaitPresent(index, SpinTicks, _timeout, this))
            throw t.Failure is { } f
                ? f as PageUnavailableException ?? new PageUnavailableException(f.Message, f)
                : new PageUnavailableException($"page {index} did not arrive within {_timeout.TotalSeconds:0.#} s");
    }

    void IRerequest.Request(ulong index)
    {
        if (_inPlace) _installer.InstallInPlace(index);
        else _source.Request(_tracker.AddressOf(index));
    }
}
