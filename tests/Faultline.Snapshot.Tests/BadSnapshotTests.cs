using System.Text.Json.Nodes;
using Faultline.Paging;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary>
/// Every way a snapshot can be bad: one-line <see cref="SnapshotException"/> (exit code 2) before any vCPU runs, and
/// nothing left behind; a page that fails its checksum during the run stops the VM with that error.
/// </summary>
public sealed class BadSnapshotTests
{
    public static TheoryData<string, string> Cases() => new()
    {
        { "no-dir", "no such directory" },
        { "no-manifest", "manifest.json is missing" },
        { "bad-json", "is not valid JSON" },
        { "other-version", "format version 2 is not understood" },
        { "other-format", "is not faultline-snapshot" },
        { "layout-ram-base", "this build's guest layout puts it at" },
        { "layout-vcpus", "vCPU state has 2 vCPU(s), the layout said 4" },
        { "layout-too-big", "the layout does not fit this build: guest memory 4294975488 bytes is more than this guest layout maps (4096 MiB)" },
        { "layout-image", "restore it with the build that saved it" },
        { "image-checksum", "guest.img fails its checksum" },
        { "no-memory", "memory.img is missing" },
        { "truncated-memory", "memory.img is truncated" },
        { "index-checksum", "pages.idx fails its checksum" },
        { "truncated-index", "pages.idx is truncated" },
        { "vcpu-checksum", "vcpus.bin fails its checksum" },
        { "missing-field", "lacks a field" },
    };

    [KvmTheory]
    [MemberData(nameof(Cases))]
    public void A_bad_snapshot_is_refused_in_one_line_before_the_vm_starts(string damage, string expected)
    {
        using var snap = TempSnapshot.Save();
        var dir = Damage(snap, damage);
        var before = Baseline();
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestorer.Restore(dir, new RestoreOptions(PagingMode.Exits) { Record = false }));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(2, e.ExitCode);
        var after = ProcessResources.Settled(before);
        Assert.True(after.Fds <= before.Fds, $"{after.Fds - before.Fds} fd(s) left open");
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a vCPU or fill thread was left running");
        Assert.False(File.Exists(snap.Files.WorkingSet));
    }

    public static TheoryData<string, string, int> CheckedBesideTheBuild() => new()
    {
        { "index-checksum", "pages.idx fails its checksum", 2 },
        { "vcpu-checksum", "vcpus.bin fails its checksum", 2 },
        { "image-checksum", "guest.img fails its checksum", 2 },
        { "index-checksum", "pages.idx fails its checksum", 1 },   // one vCPU thread builds the VM and chooses the engine
    };

    /// <summary>
    /// The VM is built beside the checks after the manifest: made to exist (with its vCPUs) before the check runs, it is
    /// torn down with the vCPU threads when the check fails, and the restore's error is the check's.
    /// </summary>
    [KvmTheory]
    [MemberData(nameof(CheckedBesideTheBuild))]
    public void A_check_that_fails_after_the_vm_was_built_tears_it_down_before_any_vcpu_runs(string damage, string expected, int vcpus)
    {
        using var snap = TempSnapshot.Save(vcpus: vcpus);
        var dir = Damage(snap, damage);
        var before = Baseline();
        using var created = new ManualResetEventSlim();
        var vcpuFdsAtCheck = -1;
        var o = new RestoreOptions(PagingMode.Exits)
        {
            Record = false,
            VmCreated = created.Set,
            BeforeChecks = () =>
            {
                // the build waits for the kept image, which it gets only after the checks: the VM exists before they run
                if (created.Wait(TimeSpan.FromSeconds(30))) vcpuFdsAtCheck = ProcessResources.Now().Kernel.Vcpus - before.Kernel.Vcpus;
            },
        };
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestorer.Restore(dir, o));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(2, e.ExitCode);
        Assert.Equal(vcpus, vcpuFdsAtCheck);   // the VM and its vCPUs were there while the snapshot was checked
        var after = ProcessResources.Settled(before);
        Assert.True(after.Fds <= before.Fds, $"{after.Fds - before.Fds} fd(s) left open (the VM, its vCPUs or memory)");
        Assert.True(after.Kernel.Vms <= before.Kernel.Vms && after.Kernel.Vcpus <= before.Kernel.Vcpus, "a VM or vCPU fd was left open");
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a vCPU thread was left running");
        Assert.True(after.OurMappings <= before.OurMappings, "guest memory was left mapped");
    }

    /// <summary>
    /// The process's resources before a restore, taken after the decoder a restore prepares beside its checks has been
    /// loaded: the first load of Iced's assembly in a test process keeps two fds open on its file, which is not a leak.
    /// </summary>
    private static ProcessResources Baseline()
    {
        EngineFactory.Prepare(PagingMode.Exits);
        return ProcessResources.Now();
    }

    internal static string Damage(TempSnapshot snap, string damage)
    {
        var f = snap.Files;
        switch (damage)
        {
            case "no-dir": return snap.Dir + "-nowhere";
            case "no-manifest": File.Delete(f.Manifest); break;
            case "bad-json": File.WriteAllText(f.Manifest, "{ \"format\": \"faultline-snapshot\", "); break;
            case "other-version": EditManifest(f, j => j["format_version"] = 2); break;
            case "other-format": EditManifest(f, j => j["format"] = "firecracker"); break;
            case "layout-ram-base": EditManifest(f, j => j["layout"]!["ram_base"] = 0x800000); break;
            case "layout-vcpus": EditManifest(f, j => j["layout"]!["vcpus"] = 4); break;
            case "layout-too-big": EditManifest(f, j => j["layout"]!["ram_bytes"] = (4UL << 30) + 2 * 4096); break;   // two pages above the largest guest
            case "layout-image":   // a snapshot of another build: another image, saved by another generator
                EditManifest(f, j =>
                {
                    j["layout"]!["guest_image_crc32c"] = 12345;
                    j["layout"]!["guest_image"]!["generator"] = "another-build";
                });
                break;
            case "image-checksum": Flip(f.Image, 0x1000); break;   // the page tables' top level, written by every image
            case "no-memory": File.Delete(f.Memory); break;
            case "truncated-memory": using (var s = new FileStream(f.Memory, FileMode.Open)) s.SetLength(s.Length - 4096); break;
            case "index-checksum": Flip(f.Index, 40); break;
            case "truncated-index": using (var s = new FileStream(f.Index, FileMode.Open)) s.SetLength(s.Length - 4); break;
            case "vcpu-checksum": Flip(f.Vcpus, 30); break;
            case "missing-field": EditManifest(f, j => ((JsonObject)j["memory"]!).Remove("data_pages")); break;
            default: throw new ArgumentException(damage);
        }
        return snap.Dir;
    }

    /// <summary>Inverts one byte of a file: whatever it held, it now differs.</summary>
    private static void Flip(string path, long offset)
    {
        var b = File.ReadAllBytes(path);
        b[offset] ^= 0xFF;
        File.WriteAllBytes(path, b);
    }

    private static void EditManifest(SnapshotFiles f, Action<JsonNode> edit)
    {
        var j = JsonNode.Parse(File.ReadAllText(f.Manifest))!;
        edit(j);
        File.WriteAllText(f.Manifest, j.ToJsonString());
    }

    [KvmTheory]
    [InlineData(PagingMode.Exits)]
    [InlineData(PagingMode.Missing)]
    [InlineData(PagingMode.Minor)]
    public void A_page_that_fails_its_checksum_during_the_run_stops_the_vm_with_that_error(PagingMode engine)
    {
        using var snap = TempSnapshot.Save();
        using var index = PageIndex.Read(snap.Files.Index, snap.Saved.Manifest.Pages, snap.Saved.Manifest.IndexCrc);
        ulong victim = 0;
        while (!index.IsData(victim)) victim++;
        victim += 5;   // a data page some way into the first vCPU's range
        TempSnapshot.Patch(snap.Files.Memory, (long)victim * 4096 + 100, [0x01, 0x02, 0x03]);
        var before = ProcessResources.Now();
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(engine) { Fill = false, Record = false, Timeout = TimeSpan.FromSeconds(60) }));
        Assert.Contains($"page {victim} ", e.Message);
        Assert.Contains("fails its checksum", e.Message);
        var after = ProcessResources.Settled(before);
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a vCPU, reader or fill thread was left running");
        Assert.True(after.Fds <= before.Fds, $"{after.Fds - before.Fds} fd(s) left open");
    }
}
