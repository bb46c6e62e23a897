using System.Globalization;

namespace Faultline.Cli;

/// <summary>
/// The CLI's value syntaxes, as pure functions: whole numbers, sizes (512K, 64M, 2G, 4096), comma lists (1,2,8).
/// Each returns false with a one-line reason that the option factories turn into a parse error.
/// </summary>
public static class ValueParsers
{
    public const ulong KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

    /// <summary>A decimal whole number without sign or separators.</summary>
    public static bool TryParseInt(string text, out int value, out string error)
    {
        if (int.TryParse(text.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value))
        {
            error = "";
            return true;
        }
        error = $"'{text}' is not a whole number";
        return false;
    }

    /// <summary>
    /// A size in bytes: a whole number with an optional binary suffix K, M, G or T (KiB, MiB, GiB, TiB and KB, MB, GB,
    /// TB are read the same: powers of 1024), case-insensitive. "64M" = 67108864.
    /// </summary>
    public static bool TryParseSize(string text, out ulong bytes, out string error)
    {
        bytes = 0;
        error = $"'{text}' is not a size (use e.g. 512K, 64M, 2G)";
        var s = text.Trim();
        var digits = 0;
        while (digits < s.Length && char.IsAsciiDigit(s[digits])) digits++;
        if (digits == 0) return false;
        var suffix = s[digits..].ToUpperInvariant();
        ulong unit = suffix switch
        {
            "" or "B" => 1,
            "K" or "KB" or "KIB" => KiB,
            "M" or "MB" or "MIB" => MiB,
            "G" or "GB" or "GIB" => GiB,
            "T" or "TB" or "TIB" => TiB,
            _ => 0,
        };
        if (unit == 0) return false;
        if (!ulong.TryParse(s.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture, out var n)) { error = $"'{text}' is too large"; return false; }
        try { bytes = checked(n * unit); }
        catch (OverflowException) { error = $"'{text}' is too large"; return false; }
        error = "";
        return true;
    }

    /// <summary>A comma-separated list of items, each parsed by <paramref name="item"/>; empty items are errors.</summary>
    public static bool TryParseList<T>(string text, TryParseItem<T> item, out T[] values, out string error)
    {
        var parts = text.Split(',');
        values = new T[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (parts[i].Trim().Length == 0) { error = $"'{text}' has an empty item (write e.g. 1,2,8)"; values = []; return false; }
            if (!item(parts[i], out values[i], out var e)) { error = $"in '{text}': {e}"; values = []; return false; }
        }
        error = "";
        return true;
    }

    /// <summary>A byte count in words for messages: "3 GiB", "4 KiB", "1536 KiB", "4097 bytes".</summary>
    public static string DescribeSize(ulong bytes)
    {
        foreach (var (unit, suffix) in new[] { (TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB") })
            if (bytes >= unit && bytes % unit == 0) return $"{bytes / unit} {suffix}";
        return bytes == 1 ? "1 byte" : $"{bytes} bytes";
    }

    /// <summary>Formats a byte count the way the parsers read it back (64M, 1536K, 4097).</summary>
    public static string FormatSize(ulong bytes)
    {
        if (bytes == 0) return "0";
        foreach (var (unit, suffix) in new[] { (TiB, "T"), (GiB, "G"), (MiB, "M"), (KiB, "K") })
            if (bytes % unit == 0) return $"{bytes / unit}{suffix}";
        return bytes.ToString(CultureInfo.InvariantCulture);
    }
}

/// <summary>The shape of the item parsers <see cref="ValueParsers.TryParseList{T}"/> takes.</summary>
public delegate bool TryParseItem<T>(string text, out T value, out string error);
