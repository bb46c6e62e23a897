using System.Globalization;

namespace Faultline.Migration;

/// <summary>What a fault injection does when its point comes.</summary>
public enum InjectionKind
{
    /// <summary>Cut the link: both channels shut down in both directions, as a broken network; both ends see it.</summary>
    CutLink,
    /// <summary>Kill the source process (SIGKILL): only where the source is this command's child.</summary>
    KillSource,
}

/// <summary>One injection: what, and after how many pages received at the destination (or at which fraction of the guest's pages; null: a random point).</summary>
public sealed record Injection(InjectionKind Kind, long? AtPages, double? AtFraction)
{
    public string Word => WordOf(Kind);

    /// <summary>The word <c>--inject</c> spells a kind with.</summary>
    public static string WordOf(InjectionKind kind) => kind switch { InjectionKind.CutLink => "cut-link", _ => "kill-source" };
}

/// <summary>
/// Failures to rehearse during a post-copy (<c>--inject cut-link[@POINT],kill-source@POINT,…</c>), each at a point of
/// the transfer: POINT is pages received at the destination (<c>@5000</c>) or a share of the guest's pages
/// (<c>@40%</c>); <c>cut-link</c> alone cuts once at a random point. Points are resolved against the guest's size when
/// the migration starts (<see cref="Resolve"/>) and fire in order, each once.
/// </summary>
public sealed class InjectionPlan
{
    public static readonly InjectionPlan None = new([]);

    public IReadOnlyList<Injection> Injections { get; }
    public bool IsEmpty => Injections.Count == 0;

    public InjectionPlan(IReadOnlyList<Injection> injections) => Injections = injections;

    /// <summary>Parses a comma-separated list; bad input is a <see cref="UsageException"/> naming the part.</summary>
    public static InjectionPlan Parse(string spec)
    {
        var list = new List<Injection>();
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            if (raw.Length == 0) throw new UsageException($"--inject {spec}: an empty item (use e.g. cut-link, cut-link@5000, kill-source@50%)");
            var at = raw.IndexOf('@');
            var word = (at < 0 ? raw : raw[..at]).ToLowerInvariant();
            var kind = word switch
            {
                "cut-link" => InjectionKind.CutLink,
                "kill-source" => InjectionKind.KillSource,
                _ => throw new UsageException($"--inject {raw}: unknown failure '{word}' (use cut-link or kill-source)"),
            };
            if (at < 0)
            {
                if (kind != InjectionKind.CutLink) throw new UsageException($"--inject {raw}: say when, e.g. {word}@5000 (pages received) or {word}@50%");
                list.Add(new Injection(kind, null, null));
                continue;
            }
            var point = raw[(at + 1)..];
            if (point.EndsWith('%')
                && double.TryParse(point[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var pct) && pct is >= 0 and < 100)
                list.Add(new Injection(kind, null, pct / 100));
            else if (long.TryParse(point, NumberStyles.None, CultureInfo.InvariantCulture, out var pages) && pages > 0)
                list.Add(new Injection(kind, pages, null));
            else throw new UsageException($"--inject {raw}: '{point}' is not a point of the transfer (pages received, e.g. 5000, or a share, e.g. 40%)");
        }
        return new InjectionPlan(list);
    }

    /// <summary>The points as pages received, in firing order, for a guest of <paramref name="pages"/> pages (a random point in its middle 80% where none was said).</summary>
    public (long AtPages, InjectionKind Kind)[] Resolve(ulong pages, Random random)
    {
        var n = (long)pages;
        return [.. Injections
            .Select(i => (AtPages: Math.Clamp(i.AtPages ?? (long)Math.Round((i.AtFraction ?? (0.1 + 0.8 * random.NextDouble())) * n), 1, Math.Max(1, n - 1)), i.Kind))
            .OrderBy(p => p.AtPages)];
    }

    public override string ToString() => string.Join(",", Injections.Select(i =>
        i.AtPages is { } p ? $"{i.Word}@{p}" : i.AtFraction is { } f ? string.Create(CultureInfo.InvariantCulture, $"{i.Word}@{f * 100:0.##}%") : i.Word));
}
