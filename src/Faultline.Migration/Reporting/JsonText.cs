using System.Text;
using System.Text.Json;

namespace Faultline.Migration.Reporting;

/// <summary>The reports' JSON: one indented document written with Utf8JsonWriter (no reflection, trim-safe).</summary>
internal static class JsonText
{
    public static string Write(Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true })) body(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>An array of numbers rounded to <paramref name="digits"/> decimals.</summary>
    public static void WriteRounded(this Utf8JsonWriter w, string name, IEnumerable<double> values, int digits = 3)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(Math.Round(v, digits));
        w.WriteEndArray();
    }
}
