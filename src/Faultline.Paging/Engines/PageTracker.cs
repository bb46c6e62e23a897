using Faultline.Kvm.Memory;

namespace Faultline.Paging.Engines;

/// <summary>
/// Per-page install state of guest RAM under test: missing → installing → present, changed atomically, so that
/// whoever wins the claim installs a page exactly once while racing paths (readers, vCPU exits, a migration's push)
/// wait for it. One byte per 4 KiB page: 0.024% of guest memory.
/// </summary>
public sealed class PageTracker
{
    public const byte Missing = 0, Installing = 1, Present = 2;
    private readonly byte[] _state;
    private long _present;

    public GuestAddress Base { get; }
    public ulong Pages { get; }
    public long PresentCount => Interlocked.Read(ref _present);
    public bool Complete => PresentCount == (long)Pages;
    public long MemoryBytes => _state.Length;

    public PageTracker(GuestAddress @base, ulong bytes)
    {
        Base = @base;
        Pages = bytes >> GuestAddress.PageShift;
        _state = new byte[Pages];
    }

    public bool Contains(GuestAddress gpa) => gpa.Value >= Base.Value && (gpa.Value - Base.Value) >> 12 < Pages;
    public ulong IndexOf(GuestAddress gpa) => (gpa.Value - Base.Value) >> 12;
    public GuestAddress AddressOf(ulong index) => Base + (index << 12);

    public byte StateOf(ulong index) => Volatile.Read(ref _state[index]);
    public bool IsPresent(ulong index) => Volatile.Read(ref _state[index]) == Present;

    /// <summary>Claims a missing page for installing; false if someone else has it (installing or present).</summary>
    public bool TryClaim(ulong index) => Interlocked.CompareExchange(ref _state[index], Installing, Missing) == Missing;

    /// <summary>Publishes a claimed page as present.</summary>
    public void Publish(ulong index)
    {
        Volatile.Write(ref _state[index], Present);
        Interlocked.Increment(ref _present);
    }

    /// <summary>Gives a claim back without installing (the install failed and will be retried).</summary>
    public void Abandon(ulong index) => Volatile.Write(ref _state[index], Missing);

    /// <summary>Marks a present page missing again (its host mapping was taken away).</summary>
    public bool TryReset(ulong index)
    {
        if (Interlocked.CompareExchange(ref _state[index], Missing, Present) != Present) return false;
        Interlocked.Decrement(ref _present);
        return true;
    }

    /// <summary>Takes a present page for eviction (Present → Installing: installers wait meanwhile).</summary>
    public bool TryClaimPresent(ulong index)
    {
        if (Interlocked.CompareExchange(ref _state[index], Installing, Present) != Present) return false;
        Interlocked.Decrement(ref _present);
        return true;
    }

    /// <summary>Ends an eviction: the page is missing on the host now.</summary>
    public void ReleaseToMissing(ulong index) => Volatile.Write(ref _state[index], Missing);

    /// <summary>
    /// Called on a thread that <see cref="WaitPresent"/> is about to let yield. A thread under a real-time policy must
    /// leave it here: sched_yield only lets threads of its own priority run, so the installer it waits for (a normal
    /// thread, perhaps queued on the same CPU) would not get the CPU. Set once by the layer that raises threads.
    /// </summary>
    public static Action? BeforeYielding { get; set; }

    /// <summary>
    /// Waits until a page being installed by another thread is present: spinning for up to 100 µs (the installer is
    /// inside one ioctl, up to a 64-page UFFDIO_COPY; a yielding low-priority thread may not run again for
    /// milliseconds while busier threads hold the cores), then yielding (after <see cref="BeforeYielding"/>).
    /// </summary>
    public void WaitPresent(ulong index)
    {
        if (Volatile.Read(ref _state[index]) != Installing) return;
        var until = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency / 10_000;
        while (Volatile.Read(ref _state[index]) == Installing && System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(10);
        if (Volatile.Read(ref _state[index]) != Installing) return;
        BeforeYielding?.Invoke();
        var spin = new SpinWait();
        while (Volatile.Read(ref _state[index]) == Installing) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>Marks every page present (memory populated up front).</summary>
    public void MarkAllPresent()
    {
        Array.Fill(_state, Present);
        Interlocked.Exchange(ref _present, (long)Pages);
    }
}
