namespace Faultline.Paging.Engines;

/// <summary>How long a fault path spins for its page before it blocks on the tracker.</summary>
public static class FaultWait
{
    public const double MinSpinUs = 20, MaxSpinUs = 1000;

    /// <summary>
    /// About twice what the source usually takes plus 20 µs, within 20 µs..1 ms: a page that lands meanwhile costs no
    /// wake-up (15–27 µs across CPUs on this nested host, and a cross-CPU wake-up can wait for a host tick, 4 ms).
    /// </summary>
    public static double SpinMicroseconds(TimeSpan expected) => Math.Clamp(expected.TotalMicroseconds * 2 + 20, MinSpinUs, MaxSpinUs);
}
