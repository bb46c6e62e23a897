using System.Diagnostics;

namespace Faultline.Migration;

/// <summary>Timestamps both ends can compare on one host: Stopwatch is CLOCK_MONOTONIC on Linux, shared by every process.</summary>
internal static class Clock
{
    public static long ToNanoseconds(long stopwatchTicks) => (long)(stopwatchTicks * (1e9 / Stopwatch.Frequency));
    public static long NowNs() => ToNanoseconds(Stopwatch.GetTimestamp());
    public static double Ms(long ns) => ns / 1e6;
}
