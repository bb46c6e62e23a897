using System.Globalization;

namespace Faultline.Migration;

/// <summary>What a fault injection does when its point comes.</summary>
public enum InjectionKind
{
    /// <summary>Cut the link: both channels shut down in both directions, as a broken network; both ends see it.</summary>
    CutLink,
    /// <summary>Kill the source process (SIGKILL): only where the source is this command's child.</summary>
    KillSource,
    /// <summary>Hold the link: the destination reads neither channel for the injection's duration (a stalled network, no loss).</summary>
    Delay,
    /// <summary>Damage the next page frame on the main channel: one payload byte flipped before its checksum is checked, as a link would.</summary>
    Corrupt,
    /// <summary>Kill the destination process (SIGKILL, a crash: nothing of it unwinds): only where the destination is a process of its own.</summary>
    KillDestination,
}

/// <summary>One injection: what, and after how many pages received at the destination (or at which fraction of the guest's pages; null: a random point).</summary>
public sealed record Injection(InjectionKind Kind, long? AtPages, double? AtFraction)
{
    /// <summary>A delay's hold when none is said.</summary>
    public static readonly TimeSpan DefaultHold = TimeSpan.FromMilliseconds(500);
    /// <summary>The longest hold: past the destination's idle timeout the source would see a dead peer, not a delay.</summary>
    public static readonly TimeSpan MaxHold = TimeSpan.FromSeconds(5);

    /// <summary>How long a <see cref="InjectionKind.Delay"/> holds the link.</summary>
    public TimeSpan Hold { get; init; }

    public string Word => WordOf(Kind);

    /// <summary>The word <c>--inject</c> spells a kind with.</summary>
    public static string WordOf(InjectionKind kind) => kind switch
    {
        InjectionKind.CutLink => "cut-link",
        InjectionKind.KillSource => "kill-source",
        InjectionKind.Delay => "delay",
        InjectionKind.KillDestination => "kill-dest",
        _ => "corrupt",
    };
}

/// <summary>
/// Failures to rehearse during a post-copy (<c>--inject cut-link[@POINT],delay[@POINT][:DURATION],corrupt[@POINT],
/// kill-source@POINT,kill-dest@POINT,…</c>), each at a point of the transfer: POINT is pages received at the destination
/// (<c>@5000</c>) or a share of the guest's pages (<c>@40%</c>); without one, cut-link, delay and corrupt fire at a
/// random point (a kill must say when). A
/// delay holds the link for DURATION (<c>:300ms</c>, <c>:1.5s</c>; 500 ms when not said, at most 5 s). Points are resolved against the guest's size when
/// the migration starts (<see cref="Resolve"/>) and fire in order, each once.
/// </summary>
public sealed class InjectionPlan
{
    public static readonly InjectionPlan None = new([]);

    public IReadOnlyList<Injection> Injections { get; }
    public bool IsEmpty => Injections.Count == 0;

    /// <summary>Whether the plan holds an injection of <paramref name="kind"/>.</summary>
    public bool Has(InjectionKind kind) => Injections.Any(i => i.Kind == kind);

    public InjectionPlan(IReadOnlyList<Injection> injections) => Injections = injections;

    /// <summary>Parses a comma-separated list; bad input is a <see cref="UsageException"/> naming the part.</summary>
    public static InjectionPlan Parse(string spec)
    {
        var list = new List<Injection>();
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            if (raw.Length == 0) throw new UsageException($"--inject {spec}: an empty item (use e.g. cut-link, cut-link@5000, delay@20%:300ms, corrupt, kill-source@50%, kill-dest@30%)");
            var item = raw;
            var hold = Injection.DefaultHold;
            var colon = item.IndexOf(':');
            if (colon >= 0)
            {
                hold = ParseHold(raw, item[(colon + 1)..]);
                item = item[..colon];
            }
            var at = item.IndexOf('@');
            var word = (at < 0 ? item : item[..at]).ToLowerInvariant();
            var kind = word switch
            {
                "cut-link" => InjectionKind.CutLink,
                "kill-source" => InjectionKind.KillSource,
                "delay" => InjectionKind.Delay,
                "corrupt" => InjectionKind.Corrupt,
                "kill-dest" => InjectionKind.KillDestination,
                _ => throw new UsageException($"--inject {raw}: unknown failure '{word}' (use cut-link, delay, corrupt, kill-source or kill-dest)"),
            };
            if (colon >= 0 && kind != InjectionKind.Delay) throw new UsageException($"--inject {raw}: only a delay takes a duration");
            if (at < 0)
            {
                if (kind is InjectionKind.KillSource or InjectionKind.KillDestination) throw new UsageException($"--inject {raw}: say when, e.g. {word}@5000 (pages received) or {word}@50%");
                list.Add(new Injection(kind, null, null) { Hold = hold });
                continue;
            }
            var point = item[(at + 1)..];
            if (point.EndsWith('%')
                && double.TryParse(point[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var pct) && pct is >= 0 and < 100)
                list.Add(new Injection(kind, null, pct / 100) { Hold = hold });
            else if (long.TryParse(point, NumberStyles.None, CultureInfo.InvariantCulture, out var pages) && pages > 0)
                list.Add(new Injection(kind, pages, null) { Hold = hold });
            else throw new UsageException($"--inject {raw}: '{point}' is not a point of the transfer (pages received, e.g. 5000, or a share, e.g. 40%)");
        }
        return new InjectionPlan(list);
    }

    private static TimeSpan ParseHold(string raw, string text)
    {
        var (number, scale) = text.EndsWith("ms", StringComparison.OrdinalIgnoreCase) ? (text[..^2], 1.0)
            : text.EndsWith('s') || text.EndsWith('S') ? (text[..^1], 1000.0) : (text, double.NaN);
        if (double.IsNaN(scale) || !double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v))
            throw new UsageException($"--inject {raw}: '{text}' is not a duration (e.g. 300ms, 1.5s)");
        var hold = TimeSpan.FromMilliseconds(v * scale);
        if (hold <= TimeSpan.Zero || hold > Injection.MaxHold)
            throw new UsageException($"--inject {raw}: a delay of {text} is outside 1ms..{Injection.MaxHold.TotalSeconds:0}s");
        return hold;
    }

    /// <summary>The points as pages received, in firing order, for a guest of <paramref name="pages"/> pages (a random point in its middle 80% where none was said).</summary>
    public (long AtPages, InjectionKind Kind, TimeSpan Hold)[] Resolve(ulong pages, Random random)
    {
        var n = (long)pages;
        return [.. Injections
            .Select(i => (AtPages: Math.Clamp(i.AtPages ?? (long)Math.Round((i.AtFraction ?? (0.1 + 0.8 * random.NextDouble())) * n), 1, Math.Max(1, n - 1)), i.Kind, i.Hold))
            .OrderBy(p => p.AtPages)];
    }

    public override string ToString() => string.Join(",", Injections.Select(i =>
        (i.AtPages is { } p ? $"{i.Word}@{p}" : i.AtFraction is { } f ? string.Create(CultureInfo.InvariantCulture, $"{i.Word}@{f * 100:0.##}%") : i.Word)
        + (i.Kind == InjectionKind.Delay && i.Hold != Injection.DefaultHold ? string.Create(CultureInfo.InvariantCulture, $":{i.Hold.TotalMilliseconds:0.###}ms") : "")));
}
