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

    /// <summary>Samples at or over <paramref name="ns"/> (read at the end, not per sample).</summary>
    public long CountAtLeast(long ns)
    {
        long k = 0;
        foreach (var s in _samples.AsSpan(0, Count)) if (s >= ns) k++;
        return k;
    }

    public LatencySummary Summarize()
    {
        var n = Count;
        if (n == 0) return new LatencySummary(0, 0, 0, 0, 0, 0, 0) { Histogram = [] };
        var s = _samples.AsSpan(0, n).ToArray();
        Array.Sort(s);
        double Us(double q) => s[Math.Min(n - 1, (int)Math.Ceiling(q * n) - 1)] / 1000.0;
        return new LatencySummary(n, Us(0.50), Us(0.90), Us(0.99), s[^1] / 1000.0, s.Average() / 1000.0, s[0] / 1000.0)
        {
            Histogram = LatencySummary.PowerOfTwoBuckets(s),
        };
    }
}

/// <summary>Latency percentiles in microseconds (fault latency, the link's round trip).</summary>
public sealed record LatencySummary(int Count, double P50, double P90, double P99, double Max, double Mean, double Min)
{
    /// <summary>Samples per power-of-two bucket of microseconds: [i] counts [2^i, 2^(i+1)) µs, [0] also under 1 µs.</summary>
    public IReadOnlyList<long> Histogram { get; init; } = [];

    public static long[] PowerOfTwoBuckets(ReadOnlySpan<long> samplesNs)
    {
        var buckets = new long[64];
        var top = -1;
        foreach (var ns in samplesNs)
        {
            var us = (ulong)Math.Max(ns / 1000, 1);
            var b = 63 - (int)ulong.LeadingZeroCount(us);
            buckets[b]++;
            top = Math.Max(top, b);
        }
        return buckets[..(top + 1)];
    }

    /// <summary>The histogram in one line: "[16,32) 12, [32,64) 340, …" (empty buckets left out).</summary>
    public string CompactHistogram()
    {
        var parts = new List<string>();
        for (var i = 0; i < Histogram.Count; i++)
            if (Histogram[i] != 0) parts.Add($"<{Bound(i + 1)} {Histogram[i]}");
        return string.Join(", ", parts);
    }

    private static string Bound(int i) => i >= 10 ? $"{(1L << i) / 1000.0:0.#}ms" : $"{1L << i}µs";
}
