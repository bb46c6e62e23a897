using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary>Save a running guest, restore it through each engine: the guest verifies every page it touches against the snapshot.</summary>
public sealed class RoundTripTests
{
    public static TheoryData<PagingMode, bool> Engines() => new()
    {
        { PagingMode.Missing, true }, { PagingMode.Minor, true }, { PagingMode.Exits, true }, { PagingMode.Bitmap, true },
        { PagingMode.Missing, false }, { PagingMode.Minor, false }, { PagingMode.Exits, false }, { PagingMode.None, false },
    };

    [KvmTheory]
    [MemberData(nameof(Engines))]
    public void Restored_guest_finds_every_page_it_saved_and_each_data_page_is_read_once(PagingMode engine, bool fill)
    {
        using var snap = TempSnapshot.Save();
        var m = snap.Saved.Manifest;
        Assert.True(m.DataPages > 0 && m.DataPages < m.Pages, $"{m.DataPages} data pages of {m.Pages}: the snapshot should have both data and holes");
        var r = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(engine) { Fill = fill, Record = false });
        Assert.Equal(0UL, r.GuestMismatches);   // the generation program checked all 512 qwords of every page it visited
        if (engine == PagingMode.None) return;
        // sequential passes visit every used page, and every data page is in the used range: each read exactly once
        Assert.Equal((long)m.DataPages, r.PagesDemand + r.PagesPrefetched);
        if (fill) Assert.True(r.ResidentMs > 0, "the fill made every page resident");
        else Assert.Equal((long)m.DataPages, r.PagesDemand);   // no fill: every data page came on demand
        // with no fill nothing else installs: no fault ever blocks on the tracker (whose first wait may allocate its event)
        if (engine == PagingMode.Exits && !fill) Assert.Equal(0, r.FaultPathAllocatedBytes);
    }

    [KvmTheory]
    [InlineData(2)]
    [InlineData(1)]   // one vCPU thread: the build assembles the image itself
    public void The_kept_guest_image_stands_in_for_assembling_it_and_a_snapshot_without_one_is_assembled_and_compared(int vcpus)
    {
        using var snap = TempSnapshot.Save(vcpus: vcpus);
        Assert.Equal(GuestImage.GeneratorId, snap.Saved.Manifest.ImageGenerator);
        var kept = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits) { Record = false });
        Assert.True(kept.Startup!.ImageLoaded, "this build's snapshot: the image came from guest.img");
        Assert.Equal(0UL, kept.GuestMismatches);
        // as a snapshot saved before guest.img existed: no file, no generator in the manifest
        File.Delete(snap.Files.Image);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(snap.Files.Manifest))!;
        ((System.Text.Json.Nodes.JsonObject)json["layout"]!).Remove("guest_image");
        File.WriteAllText(snap.Files.Manifest, json.ToJsonString());
        var assembled = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits) { Record = false });
        Assert.False(assembled.Startup!.ImageLoaded, "no kept image: assembled and its CRC compared");
        Assert.Equal(0UL, assembled.GuestMismatches);
    }

    [KvmFact]
    public void A_snapshot_paused_inside_its_first_pass_restores_and_its_holes_are_faulted_in_as_zeros()
    {
        using var snap = TempSnapshot.Save(passes: 0, usedPercent: 100);
        var r = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits) { Fill = false, Record = false });
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal((long)snap.Saved.Manifest.DataPages, r.PagesDemand);
        Assert.Equal((long)(snap.Saved.Manifest.Pages - snap.Saved.Manifest.DataPages), r.PagesDemandZero);   // the rest of pass 0 wrote the holes
    }

    [KvmFact]
    public void Holes_are_never_read_from_the_file()
    {
        using var snap = TempSnapshot.Save();
        using var index = PageIndex.Read(snap.Files.Index, snap.Saved.Manifest.Pages, snap.Saved.Manifest.IndexCrc);
        // poison every hole in the memory file: a restore that read one would install 0xA5 bytes (or fail its checksum)
        var poison = Enumerable.Repeat((byte)0xA5, 4096).ToArray();
        for (ulong p = 0; p < index.Pages; p++) if (!index.IsData(p)) TempSnapshot.Patch(snap.Files.Memory, (long)p * 4096, poison);
        ulong nonZeroHoles = 0;
        var r = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits)
        {
            Record = false,
            Inspect = machine =>
            {
                var ram = machine.Ram;
                for (ulong p = 0; p < index.Pages; p++)
                    if (!index.IsData(p) && ram.Span(ram.Base + p * 4096, 4096).IndexOfAnyExcept((byte)0) >= 0) nonZeroHoles++;
            },
        });
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal(0UL, nonZeroHoles);
        Assert.Equal((long)index.DataPages, r.PagesDemand + r.PagesPrefetched);   // reads: the data pages, once each
    }

    [KvmFact]
    public void The_memory_file_is_sparse_and_the_index_matches_the_guest_memory()
    {
        using var snap = TempSnapshot.Save(ram: 16 << 20);
        var m = snap.Saved.Manifest;
        Assert.Equal((long)m.RamBytes, new FileInfo(snap.Files.Memory).Length);
        Assert.Equal((long)m.DataPages * 4096, snap.Saved.BytesWritten);
        var used = m.UsedBytesPerVcpu / 4096;
        Assert.Equal(used * (ulong)m.Vcpus, m.DataPages);   // one whole pass wrote every used page, nothing else
        var blocks = AllocatedBytes(snap.Files.Memory);
        Assert.True(blocks < (long)m.RamBytes * 3 / 4, $"memory.img occupies {blocks} bytes of {m.RamBytes}: its holes are not holes");
    }

    /// <summary>Bytes the file system allocated for a file (st_blocks × 512, through stat(1): no interop in tests).</summary>
    private static long AllocatedBytes(string path)
    {
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%b", path]) { RedirectStandardOutput = true })!;
        var text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return long.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture) * 512;
    }
}
