namespace Faultline.Migration;

/// <summary>
/// Diagnostics: with <see cref="MigrationOptions.Trace"/> (the CLI's FAULTLINE_MIGRATION_TRACE=1), the first demand
/// requests are timestamped at each hop (one host clock, so both processes' stamps compare) and printed to stderr when
/// the end finishes. Off: one branch per hop. Process-wide within this library, switched on by an end's options.
/// </summary>
internal static class DemandTrace
{
    private static volatile bool s_on;
    public static bool On => s_on;

    /// <summary>Turns the trace on for this process (an end whose options ask for it).</summary>
    public static void Enable() => s_on = true;
    private const int Max = 64;
    private static readonly (ulong Page, string Hop, long Ns)[] Events = new (ulong, string, long)[Max * 6];
    private static int _n;

    public static void Hop(ulong page, string hop)
    {
        if (!On) return;
        HopAt(page, page >= 1_000_000 ? $"{hop}[gc{GC.CollectionCount(0)}/{GC.CollectionCount(2)}]" : hop, Clock.NowNs());
    }

    /// <summary>A hop stamped at <paramref name="ns"/> (<see cref="Clock.NowNs"/> time), recorded later.</summary>
    public static void HopAt(ulong page, string hop, long ns)
    {
        if (!On) return;
        var i = Interlocked.Increment(ref _n) - 1;
        if (i < Events.Length) Events[i] = (page, hop, ns);
    }

    public static void Dump(string side)
    {
        if (!On) return;
        var n = Math.Min(_n, Events.Length);
        Console.Error.WriteLine($"trace {side} gc {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)} pause {GC.GetTotalPauseDuration().TotalMilliseconds:0.0} ms");
        foreach (var (page, hop, ns) in Events.Take(n)) Console.Error.WriteLine($"trace {side} page {page} {hop} {ns}");
    }
}
