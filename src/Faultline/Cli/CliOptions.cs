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

    /// <summary>
    /// A size option (512K, 64M, 2G, bytes) within [<paramref name="min"/>, <paramref name="max"/>]: every command's sizes
    /// go through this one parser and say the broken limit in the user's units ("--mem 1T is above the 4 GiB limit").
    /// </summary>
    public static Option<ByteSize> Size(string name, string description, ulong defaultValue, ulong min = 1, ulong max = ulong.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "SIZE",
            DefaultValueFactory = _ => new ByteSize(defaultValue),
            CustomParser = r => ParseSize(r, name, min, max) ?? default,
        };

    /// <summary>A size option without a default (null when not given), checked as <see cref="Size"/> is.</summary>
    public static Option<ByteSize?> OptionalSize(string name, string description, ulong min = 1, ulong max = ulong.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "SIZE",
            CustomParser = r => ParseSize(r, name, min, max),
        };

    /// <summary>
    /// An output file option (--json, --svg): the path is checked when the command line is parsed (its directory exists
    /// and takes a new file), so a bad path fails before any VM is built. With <paramref name="stdoutAllowed"/>, "-" or
    /// the option given alone is stdout.
    /// </summary>
    public static Option<OutputTarget?> OutputFile(string name, string description, bool stdoutAllowed = true) =>
        new(name)
        {
            Description = description,
            HelpName = stdoutAllowed ? "FILE|-" : "FILE",
            Arity = stdoutAllowed ? ArgumentArity.ZeroOrOne : ArgumentArity.ExactlyOne,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0)
                {
                    if (stdoutAllowed) return OutputTarget.Stdout;
                    r.AddError($"{name} needs a file name");
                    return null;
                }
                var text = r.Tokens[^1].Value;
                if (text == "-")
                {
                    if (stdoutAllowed) return OutputTarget.Stdout;
                    r.AddError($"{name} needs a file name, not -");
                    return null;
                }
                if (OutputPaths.TryCheck(text, out var full, out var error)) return new OutputTarget(full);
                r.AddError($"{name} {error}");
                return null;
            },
        };

    /// <summary>A comma list of whole numbers (1,2,8), each within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<IntList> IntList(string name, string description, int[] defaultValue, int min = int.MinValue, int max = int.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "N,N,...",
            Arity = ArgumentArity.ExactlyOne,   // one token, commas inside: "1,2,8"
            DefaultValueFactory = _ => new IntList(defaultValue),
            CustomParser = r => new IntList(Parse(r, name, (string s, out int[] v, out string e) =>
                ValueParsers.TryParseList(s, (string t, out int x, out string err) => ValueParsers.TryParseInt(t, out x, out err) && InRange(x, min, max, out err), out v, out e)) ?? []),
        };

    /// <summary>The one size check: the syntax, then the limits, each message naming the option and the value as typed.</summary>
    private static ByteSize? ParseSize(ArgumentResult r, string name, ulong min, ulong max)
    {
        if (r.Tokens.Count == 0) { r.AddError($"{name} needs a value"); return null; }
        var text = r.Tokens[^1].Value.Trim();
        if (!ValueParsers.TryParseSize(text, out var bytes, out var error)) { r.AddError($"{name} {error}"); return null; }
        if (bytes > max) { r.AddError($"{name} {text} is above the {ValueParsers.DescribeSize(max)} limit"); return null; }
        if (bytes < min) { r.AddError(bytes == 0 ? $"{name} 0: the size must not be zero" : $"{name} {text} is below the {ValueParsers.DescribeSize(min)} minimum"); return null; }
        return new ByteSize(bytes);
    }

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
