using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Faultline.Cli;

/// <summary>Writes one indented JSON document to a TextWriter with Utf8JsonWriter: no reflection, trim-safe.</summary>
internal static class JsonOutput
{
    private static readonly JsonWriterOptions Options = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string Text(Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, Options)) body(w);
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>An address as "0x…", the way HOST.md and the kernel write them.</summary>
    public static void WriteHex(this Utf8JsonWriter w, string name, ulong value) => w.WriteString(name, $"0x{value:x}");

    /// <summary>A double rounded to <paramref name="digits"/> decimals (rates and seconds need no more).</summary>
    public static void WriteRounded(this Utf8JsonWriter w, string name, double value, int digits = 3)
    {
        if (double.IsFinite(value)) w.WriteNumber(name, Math.Round(value, digits));
        else w.WriteNull(name);
    }
}
