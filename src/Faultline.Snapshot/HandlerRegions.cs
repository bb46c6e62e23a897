using System.Text.Json;

namespace Faultline.Snapshot;

/// <summary>One guest memory region as Firecracker's page-handler protocol describes it.</summary>
public readonly record struct HandlerRegion(ulong BaseHostVirtAddr, ulong Size, ulong Offset, ulong PageSize)
{
    public ulong End => BaseHostVirtAddr + Size;
}

/// <summary>
/// The JSON array of regions a VMM sends with its userfaultfd (Firecracker's <c>GuestRegionUffdMapping</c>):
/// <c>base_host_virt_addr</c>, <c>size</c>, <c>offset</c> (into the memory file), <c>page_size</c>, and the deprecated
/// <c>page_size_kib</c>, which despite its name holds bytes. Checked against the snapshot: 4 KiB pages, page-aligned,
/// inside the memory file, no two overlapping. Anything else is refused with one line.
/// </summary>
public static class HandlerRegions
{
    public static HandlerRegion[] Parse(ReadOnlySpan<byte> json, ulong memoryBytes)
    {
        var regions = new List<HandlerRegion>();
        try
        {
            using var doc = JsonDocument.Parse(json.ToArray());
            if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new SnapshotException("the region message is not a JSON array");
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                var page = e.TryGetProperty("page_size", out var ps) ? ps.GetUInt64()
                    : e.TryGetProperty("page_size_kib", out var kib) ? kib.GetUInt64()   // bytes, whatever the name says
                    : throw new SnapshotException("a region has neither page_size nor page_size_kib");
                regions.Add(new HandlerRegion(e.GetProperty("base_host_virt_addr").GetUInt64(), e.GetProperty("size").GetUInt64(),
                    e.GetProperty("offset").GetUInt64(), page));
            }
        }
        catch (JsonException e) { throw new SnapshotException($"the region message is not valid JSON: {e.Message.Split('\n')[0]}"); }
        catch (KeyNotFoundException) { throw new SnapshotException("a region lacks base_host_virt_addr, size or offset"); }
        catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new SnapshotException($"a region field has the wrong type: {e.Message}"); }
        if (regions.Count == 0) throw new SnapshotException("the region message lists no region");
        foreach (var r in regions)
        {
            if (r.PageSize != SnapshotFiles.PageSize) throw new SnapshotException($"region at 0x{r.BaseHostVirtAddr:x}: page size {r.PageSize}, this snapshot has {SnapshotFiles.PageSize}-byte pages");
            if (r.Size == 0 || (r.BaseHostVirtAddr | r.Size | r.Offset) % SnapshotFiles.PageSize != 0)
                throw new SnapshotException($"region at 0x{r.BaseHostVirtAddr:x}: base, size and offset must be whole, non-empty pages");
            if (r.Offset > memoryBytes || r.Size > memoryBytes - r.Offset)
                throw new SnapshotException($"region at 0x{r.BaseHostVirtAddr:x}: offset {r.Offset} + size {r.Size} is past the {memoryBytes}-byte memory file");
        }
        var sorted = regions.OrderBy(r => r.BaseHostVirtAddr).ToArray();
        for (var i = 1; i < sorted.Length; i++)
            if (sorted[i].BaseHostVirtAddr < sorted[i - 1].End)
                throw new SnapshotException($"regions at 0x{sorted[i - 1].BaseHostVirtAddr:x} and 0x{sorted[i].BaseHostVirtAddr:x} overlap");
        return sorted;
    }
}
