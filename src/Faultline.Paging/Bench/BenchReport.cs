using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Faultline.Paging.Bench;

/// <summary>Writes bench rows as JSON (`--json`) and as an SVG chart of pages/s against vCPUs (`--svg`).</summary>
public static class BenchReport
{
    public static void WriteJson(Stream stream, IReadOnlyList<BenchRow> rows, IReadOnlyDictionary<string, string>? host = null) =>
        WriteRows(stream, rows, host, static (w, r) =>
        {
            w.WriteString("mode", r.Mode);
            w.WriteString("backing", r.Backing);
            w.WriteString("guest_mode", r.GuestMode);
            w.WriteString("uffds", r.Uffds);
            w.WriteNumber("readers", r.Readers);
            w.WriteNumber("vcpus", r.Vcpus);
            w.WriteNumber("mem_per_vcpu_mib", r.MemPerVcpuMib);
            w.WriteNumber("pages", r.Pages);
            w.WriteString("workload", r.Workload);
            w.WriteNumber("pages_touched", r.PagesTouched);
            w.WriteNumber("demand_faults", r.DemandFaults);
            w.WriteNumber("reader_empty_wakeups_per_fault", Math.Round(r.EmptyWakeupsPerFault, 3));
            w.WriteNumber("seconds", Math.Round(r.Seconds, 6));
            w.WriteNumber("pages_per_sec", Math.Round(r.PagesPerSec));
            w.WriteNumber("alloc_bytes_per_fault", Math.Round(r.AllocBytesPerFault, 4));
            w.WriteNumber("engine_memory_fraction", Math.Round(r.EngineMemoryFraction, 6));
            w.WriteString("mechanism", r.Mechanism);
            w.WriteStartArray("samples_pages_per_sec");
            foreach (var s in r.Samples) w.WriteNumberValue(Math.Round(s));
            w.WriteEndArray();
            if (r.ReferencePagesPerSec is { } rp)
            {
                w.WriteNumber("reference_pages_per_sec", Math.Round(rp));
                w.WriteNumber("ratio", Math.Round(r.Ratio ?? 0, 3));
                w.WriteStartArray("reference_samples");
                foreach (var s in r.ReferenceSamples) w.WriteNumberValue(Math.Round(s));
                w.WriteEndArray();
            }
        });

    /// <summary>A bench's JSON: {"host": {...}, "rows": [ one object per row, its fields written by <paramref name="row"/> ]}.</summary>
    internal static void WriteRows<T>(Stream stream, IReadOnlyList<T> rows, IReadOnlyDictionary<string, string>? host, Action<Utf8JsonWriter, T> row)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        if (host is not null)
        {
            w.WriteStartObject("host");
            foreach (var (k, v) in host) w.WriteString(k, v);
            w.WriteEndObject();
        }
        w.WriteStartArray("rows");
        foreach (var r in rows)
        {
            w.WriteStartObject();
            row(w, r);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>A line chart: x = vCPUs (log2 spaced), y = pages/s, one line per row label.</summary>
    public static string Svg(IReadOnlyList<BenchRow> rows, string title)
    {
        const int W = 760, H = 440, L = 80, R = 220, T = 40, B = 50;
        var xs = rows.Select(r => r.Vcpus).Distinct().OrderBy(v => v).ToArray();
        var yMax = Math.Max(1, rows.Max(r => Math.Max(r.PagesPerSec, r.ReferencePagesPerSec ?? 0)));
        yMax = NiceCeiling(yMax);
        double X(int v) => xs.Length == 1 ? L + (W - L - R) / 2.0 : L + (W - L - R) * Array.IndexOf(xs, v) / (double)(xs.Length - 1);
        double Y(double p) => T + (H - T - B) * (1 - p / yMax);
        string[] colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.Append(ci, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(ci, $"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{W / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        for (var i = 0; i <= 5; i++)
        {
            var p = yMax * i / 5;
            sb.Append(ci, $"<line x1=\"{L}\" x2=\"{W - R}\" y1=\"{Y(p):0.#}\" y2=\"{Y(p):0.#}\" stroke=\"#ddd\"/>");
            sb.Append(ci, $"<text x=\"{L - 6}\" y=\"{Y(p) + 4:0.#}\" text-anchor=\"end\">{FormatRate(p)}</text>\n");
        }
        foreach (var v in xs)
            sb.Append(ci, $"<text x=\"{X(v):0.#}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{v}</text>\n");
        sb.Append(ci, $"<text x=\"{(L + W - R) / 2}\" y=\"{H - 12}\" text-anchor=\"middle\">vCPUs</text>\n");
        sb.Append(ci, $"<text transform=\"translate(18,{(T + H - B) / 2}) rotate(-90)\" text-anchor=\"middle\">pages/s</text>\n");
        var series = rows.GroupBy(r => r.Label).ToList();
        for (var s = 0; s < series.Count; s++)
        {
            var c = colors[s % colors.Length];
            var pts = series[s].OrderBy(r => r.Vcpus).ToList();
            sb.Append(ci, $"<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{string.Join(' ', pts.Select(r => string.Create(ci, $"{X(r.Vcpus):0.#},{Y(r.PagesPerSec):0.#}")))}\"/>\n");
            foreach (var r in pts) sb.Append(ci, $"<circle cx=\"{X(r.Vcpus):0.#}\" cy=\"{Y(r.PagesPerSec):0.#}\" r=\"3\" fill=\"{c}\"/>\n");
            var refPts = pts.Where(r => r.ReferencePagesPerSec is not null).ToList();
            if (refPts.Count > 0)
                sb.Append(ci, $"<polyline fill=\"none\" stroke=\"{c}\" stroke-dasharray=\"5,4\" stroke-width=\"1.5\" points=\"{string.Join(' ', refPts.Select(r => string.Create(ci, $"{X(r.Vcpus):0.#},{Y(r.ReferencePagesPerSec!.Value):0.#}")))}\"/>\n");
            sb.Append(ci, $"<line x1=\"{W - R + 12}\" x2=\"{W - R + 32}\" y1=\"{T + 10 + s * 18}\" y2=\"{T + 10 + s * 18}\" stroke=\"{c}\" stroke-width=\"2\"/>");
            sb.Append(ci, $"<text x=\"{W - R + 38}\" y=\"{T + 14 + s * 18}\">{Escape(series[s].Key)}</text>\n");
        }
        if (rows.Any(r => r.ReferencePagesPerSec is not null))
            sb.Append(ci, $"<text x=\"{W - R + 12}\" y=\"{T + 20 + series.Count * 18}\" fill=\"#555\">dashed: C reference</text>\n");
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    public static string FormatRate(double p) => p >= 1e6 ? (p / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + "M"
        : p >= 1e3 ? (p / 1e3).ToString("0.#", CultureInfo.InvariantCulture) + "k" : p.ToString("0", CultureInfo.InvariantCulture);

    private static double NiceCeiling(double v)
    {
        var mag = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (var m in new[] { 1, 2, 2.5, 5, 10 }) if (m * mag >= v) return m * mag;
        return 10 * mag;
    }

    private static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal);
}
