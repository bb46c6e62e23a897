using System.CommandLine;
using System.CommandLine.Parsing;
using Faultline.Guest;

namespace Faultline.Cli;

/// <summary>
/// Option factories whose parse errors are one line naming the option and the bad value ("--vcpus: 'banana' is not a
/// whole number"); <see cref="App"/> prints the first one and exits 2.
/// </summary>
internal static class CliOptions
{
    /// <summary>A whole-number option within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<int> Int(string name, string description, int defaultValue, int min = int.MinValue, int max = int.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "N",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => Parse(r, name, (string s, out int v, out string e) =>
                ValueParsers.TryParseInt(s, out v, out e) && InRange(v, min, max, out e)),
        };

    /// <summary>A size option (512K, 64M, 2G, bytes) within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<ByteSize> Size(string name, string description, ulong defaultValue, ulong min = 1, ulong max = ulong.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "SIZE",
            DefaultValueFactory = _ => new ByteSize(defaultValue),
            CustomParser = r => Parse(r, name, (string s, out ByteSize v, out string e) =>
            {
                var ok = ValueParsers.TryParseSize(s, out var bytes, out e) && InRange(bytes, min, max, out e, ValueParsers.FormatSize);
                v = new ByteSize(bytes);
                return ok;
            }),
        };

    /// <summary>A comma list of whole numbers (1,2,8), each within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<int[]> IntList(string name, string description, int[] defaultValue, int min = int.MinValue, int max = int.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "N,N,...",
            Arity = ArgumentArity.ExactlyOne,   // one token, commas inside: "1,2,8"
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => Parse(r, name, (string s, out int[] v, out string e) =>
                ValueParsers.TryParseList(s, (string t, out int x, out string err) => ValueParsers.TryParseInt(t, out x, out err) && InRange(x, min, max, out err), out v, out e)),
        };

    /// <summary>A comma list of sizes (64M,1G), each within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<ByteSize[]> SizeList(string name, string description, ulong[] defaultValue, ulong min = 1, ulong max = ulong.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "SIZE,SIZE,...",
            Arity = ArgumentArity.ExactlyOne,
            DefaultValueFactory = _ => Array.ConvertAll(defaultValue, b => new ByteSize(b)),
            CustomParser = r => Parse(r, name, (string s, out ByteSize[] v, out string e) =>
                ValueParsers.TryParseList(s, (string t, out ByteSize x, out string err) =>
                {
                    var ok = ValueParsers.TryParseSize(t, out var bytes, out err) && InRange(bytes, min, max, out err, ValueParsers.FormatSize);
                    x = new ByteSize(bytes);
                    return ok;
                }, out v, out e)),
        };

    /// <summary>One word out of a fixed set, mapped to a value (--guest-mode user|kernel). The first choice is the default.</summary>
    public static Option<Choice<T>> Choice<T>(string name, string description, params (string Word, T Value)[] choices)
    {
        var words = string.Join("|", choices.Select(c => c.Word));
        return new Option<Choice<T>>(name)
        {
            Description = description,
            HelpName = words,
            DefaultValueFactory = _ => new Choice<T>(choices[0].Word, choices[0].Value),
            CustomParser = r => Parse(r, name, (string s, out Choice<T> v, out string e) =>
            {
                foreach (var c in choices)
                    if (string.Equals(c.Word, s.Trim(), StringComparison.OrdinalIgnoreCase)) { v = new Choice<T>(c.Word, c.Value); e = ""; return true; }
                v = default;
                e = $"'{s}' is not one of {words}";
                return false;
            }),
        };
    }

    /// <summary>--workload sequential|random|hotset: the order the guest visits its pages in (sequential by default).</summary>
    public static Option<Choice<AccessOrder>> Workload(string description) =>
        Choice(WorkloadName, description,
            ("sequential", AccessOrder.Sequential), ("random", AccessOrder.Random), ("hotset", AccessOrder.Hotset));

    public const string WorkloadName = "--workload";

    private static T Parse<T>(ArgumentResult r, string name, TryParseItem<T> parse)
    {
        if (r.Tokens.Count == 0) { r.AddError($"{name} needs a value"); return default!; }
        var text = r.Tokens[^1].Value;   // the last occurrence wins, as usual for CLIs
        if (parse(text, out var value, out var error)) return value;
        r.AddError($"{name}: {error}");
        return default!;
    }

    private static bool InRange<T>(T v, T min, T max, out string error, Func<T, string>? format = null) where T : IComparable<T>
    {
        if (v.CompareTo(min) >= 0 && v.CompareTo(max) <= 0) { error = ""; return true; }
        var f = format ?? (x => x.ToString()!);
        error = $"{f(v)} is outside {f(min)}..{f(max)}";
        return false;
    }
}
