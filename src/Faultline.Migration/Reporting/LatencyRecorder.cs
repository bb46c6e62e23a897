namespace Faultline.Migration.Reporting;

/// <summary>Samples in nanoseconds, recorded from any thread without allocating (a preallocated array and an atomic index); percentiles at the end.</summary>
public sealed class LatencyRecorder(int capacity)
{
    private readonly long[] _samples = new long[Math.Max(capacity, 16)];
    private int _count;
    private long _last;

    public int Count => Math.Min(Volatile.Read(ref _count), _samples.Length);
    public long LastNs => Volatile.Read(ref _last);

    public void Record(long ns)
    {
        Volatile.Write(ref _last, ns);
        var i = Interlocked.Increment(ref _count) - 1;
        if (i < _samples.Length) _samples[i] = ns;
    }

    public LatencySummary Summarize()
    {
        var n = Count;
        if (n == 0) return new LatencySummary(0, 0, 0, 0, 0, 0, 0);
        var s = _samples.AsSpan(0, n).ToArray();
        Array.Sort(s);
        double Us(double q) => s[Math.Min(n - 1, (int)Math.Ceiling(q * n) - 1)] / 1000.0;
        return new LatencySummary(n, Us(0.50), Us(0.90), Us(0.99), s[^1] / 1000.0, s.Average() / 1000.0, s[0] / 1000.0);
    }
}

/// <summary>Latency percentiles in microseconds (fault latency, the link's round trip).</summary>
public sealed record LatencySummary(int Count, double P50, double P90, double P99, double Max, double Mean, double Min);
