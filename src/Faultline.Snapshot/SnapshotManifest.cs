using System.Text.Json;
using Faultline.Guest;

namespace Faultline.Snapshot;

/// <summary>
/// manifest.json: format and version, the guest's layout (vCPUs, where RAM sits and how big it is, a hash of the
/// generated guest image it ran), the workload that was paused, and what the other files must be (sizes, page counts,
/// CRC32C of the index and vCPU state, one CRC32C per 1 MiB chunk of memory).
/// </summary>
public sealed record SnapshotManifest
{
    public int FormatVersion { get; init; } = SnapshotFiles.FormatVersion;
    public int PageSize { get; init; } = SnapshotFiles.PageSize;
    public required int Vcpus { get; init; }
    public required ulong RamBase { get; init; }
    public required ulong RamBytes { get; init; }
    public required uint ImageCrc { get; init; }
    /// <summary>The <see cref="GuestImage.GeneratorId"/> of the build that saved it (empty: none kept; then guest.img is not used).</summary>
    public string ImageGenerator { get; init; } = "";
    public required AccessOrder Order { get; init; }
    public required int QwordsPerPage { get; init; }
    public required ulong UsedBytesPerVcpu { get; init; }
    public required long PassesBeforePause { get; init; }
    public required ulong DataPages { get; init; }
    public required uint[] ChunkCrcs { get; init; }
    public required uint IndexCrc { get; init; }
    public required long VcpuStateBytes { get; init; }
    public required uint VcpuStateCrc { get; init; }
    public string CreatedUtc { get; init; } = DateTime.UtcNow.ToString("O");

    public ulong Pages => RamBytes / SnapshotFiles.PageSize;

    public void Write(string path)
    {
        using var f = File.Create(path);
        using var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("format", SnapshotFiles.FormatName);
        w.WriteNumber("format_version", FormatVersion);
        w.WriteString("created_utc", CreatedUtc);
        w.WriteNumber("page_size", PageSize);
        w.WriteStartObject("layout");
        w.WriteNumber("vcpus", Vcpus);
        w.WriteNumber("ram_base", RamBase);
        w.WriteNumber("ram_bytes", RamBytes);
        w.WriteNumber("guest_image_crc32c", ImageCrc);
        if (ImageGenerator.Length > 0)
        {
            w.WriteStartObject("guest_image");
            w.WriteString("file", "guest.img");
            w.WriteString("generator", ImageGenerator);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteStartObject("workload");
        w.WriteString("program", "generations");
        w.WriteString("order", Order.ToString().ToLowerInvariant());
        w.WriteNumber("qwords_per_page", QwordsPerPage);
        w.WriteNumber("used_bytes_per_vcpu", UsedBytesPerVcpu);
        w.WriteNumber("passes_before_pause", PassesBeforePause);
        w.WriteEndObject();
        w.WriteStartObject("memory");
        w.WriteString("file", "memory.img");
        w.WriteNumber("bytes", RamBytes);
        w.WriteNumber("data_pages", DataPages);
        w.WriteNumber("zero_pages", Pages - DataPages);
        w.WriteNumber("chunk_pages", SnapshotFiles.ChunkPages);
        w.WriteStartArray("chunk_crc32c");
        foreach (var c in ChunkCrcs) w.WriteNumberValue(c);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteStartObject("index");
        w.WriteString("file", "pages.idx");
        w.WriteNumber("crc32c", IndexCrc);
        w.WriteEndObject();
        w.WriteStartObject("vcpu_state");
        w.WriteString("file", "vcpus.bin");
        w.WriteNumber("bytes", VcpuStateBytes);
        w.WriteNumber("crc32c", VcpuStateCrc);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>Reads and checks a manifest: a missing file, bad JSON, another format or version, a missing field: one-line <see cref="SnapshotException"/>.</summary>
    public static SnapshotManifest Read(string path)
    {
        if (!File.Exists(path)) throw new SnapshotException($"{path} is missing: not a Faultline snapshot");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new SnapshotException($"{path} is not valid JSON: {FirstLine(e.Message)}"); }
        using (doc)
        {
            var r = doc.RootElement;
            try
            {
                if (Str(r, "format") != SnapshotFiles.FormatName) throw new SnapshotException($"{path}: format '{Str(r, "format")}' is not {SnapshotFiles.FormatName}");
                var version = r.GetProperty("format_version").GetInt32();
                if (version != SnapshotFiles.FormatVersion)
                    throw new SnapshotException($"{path}: snapshot format version {version} is not understood (this build reads version {SnapshotFiles.FormatVersion})");
                var layout = r.GetProperty("layout");
                var work = r.GetProperty("workload");
                var mem = r.GetProperty("memory");
                var chunks = mem.GetProperty("chunk_crc32c");
                var crcs = new uint[chunks.GetArrayLength()];
                var i = 0;
                foreach (var c in chunks.EnumerateArray()) crcs[i++] = c.GetUInt32();
                var orderWord = Str(work, "order");
                if (!Enum.TryParse<AccessOrder>(orderWord, ignoreCase: true, out var order)) throw new SnapshotException($"{path}: workload order '{orderWord}' is unknown");
                var chunkPages = mem.GetProperty("chunk_pages").GetInt32();
                if (chunkPages != SnapshotFiles.ChunkPages) throw new SnapshotException($"{path}: chunks of {chunkPages} pages, this build reads {SnapshotFiles.ChunkPages}");
                return new SnapshotManifest
                {
                    FormatVersion = version, PageSize = r.GetProperty("page_size").GetInt32(), CreatedUtc = Str(r, "created_utc"),
                    Vcpus = layout.GetProperty("vcpus").GetInt32(), RamBase = layout.GetProperty("ram_base").GetUInt64(),
                    RamBytes = layout.GetProperty("ram_bytes").GetUInt64(), ImageCrc = layout.GetProperty("guest_image_crc32c").GetUInt32(),
                    ImageGenerator = layout.TryGetProperty("guest_image", out var gi) ? Str(gi, "generator") : "",
                    Order = order, QwordsPerPage = work.GetProperty("qwords_per_page").GetInt32(),
                    UsedBytesPerVcpu = work.GetProperty("used_bytes_per_vcpu").GetUInt64(), PassesBeforePause = work.GetProperty("passes_before_pause").GetInt64(),
                    DataPages = mem.GetProperty("data_pages").GetUInt64(), ChunkCrcs = crcs,
                    IndexCrc = r.GetProperty("index").GetProperty("crc32c").GetUInt32(),
                    VcpuStateBytes = r.GetProperty("vcpu_state").GetProperty("bytes").GetInt64(),
                    VcpuStateCrc = r.GetProperty("vcpu_state").GetProperty("crc32c").GetUInt32(),
                };
            }
            catch (KeyNotFoundException) { throw new SnapshotException($"{path} lacks a field this build needs (format version {SnapshotFiles.FormatVersion})"); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new SnapshotException($"{path} has a field of the wrong type: {FirstLine(e.Message)}");
            }
        }
    }

    /// <summary>Checks the layout against what this build's guest is (before any VM is built).</summary>
    public void CheckLayout(string path)
    {
        if (PageSize != SnapshotFiles.PageSize) throw new SnapshotException($"{path}: page size {PageSize}, this build uses {SnapshotFiles.PageSize}");
        if (RamBase != GuestLayout.RamBase) throw new SnapshotException($"{path}: guest RAM at 0x{RamBase:x}, this build's guest layout puts it at 0x{GuestLayout.RamBase:x}");
        try { new MachineConfig(Vcpus, RamBytes).Validate(); }
        catch (UsageException e) { throw new SnapshotException($"{path}: the layout does not fit this build: {e.Message}"); }
        var chunks = (Pages + SnapshotFiles.ChunkPages - 1) / SnapshotFiles.ChunkPages;
        if ((ulong)ChunkCrcs.Length != chunks) throw new SnapshotException($"{path}: {ChunkCrcs.Length} chunk checksums for {chunks} chunks");
        if (DataPages > Pages) throw new SnapshotException($"{path}: {DataPages} data pages in {Pages}");
        if (UsedBytesPerVcpu == 0 || UsedBytesPerVcpu > RamBytes / (ulong)Vcpus || UsedBytesPerVcpu % SnapshotFiles.PageSize != 0)
            throw new SnapshotException($"{path}: used_bytes_per_vcpu {UsedBytesPerVcpu} does not fit a vCPU's {RamBytes / (ulong)Vcpus} bytes");
        if (QwordsPerPage is < 1 or > 512) throw new SnapshotException($"{path}: qwords_per_page {QwordsPerPage} is outside 1..512");
    }

    private static string Str(JsonElement e, string name) => e.GetProperty(name).GetString() ?? "";
    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
