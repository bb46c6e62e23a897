using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>What <c>snapshot save</c> runs: the guest's shape and workload, and how long it runs before the pause.</summary>
public sealed record SaveOptions(int Vcpus, ulong RamBytes, AccessOrder Order = AccessOrder.Sequential, int QwordsPerPage = 1)
{
    /// <summary>Bytes of each vCPU's range the program works on; the rest stays zero (holes). 0: all of it.</summary>
    public ulong UsedBytesPerVcpu { get; init; }
    /// <summary>Whole passes every vCPU finishes before the pause (0: pause at once, in pass 0).</summary>
    public long Passes { get; init; } = 1;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Guest RAM in transparent huge pages (the host's THP permitting); off: 4 KiB pages.</summary>
    public bool HugePages { get; init; } = true;
}

/// <summary>
/// <c>snapshot save</c>: builds the guest, runs the generation program on every vCPU, pauses it, and writes the
/// snapshot (memory file with holes, page index, vCPU state, manifest last). A directory that exists must be empty; on
/// any failure what was written is removed again (and the directory, if this created it).
/// </summary>
public static class SnapshotSaver
{
    public static SaveResult Save(string directory, SaveOptions o)
    {
        // all of this guest is present (nothing is paged on demand): huge pages make its first pass cheap; holes are found by content
        var config = new MachineConfig(o.Vcpus, o.RamBytes) { HugePages = o.HugePages };
        config.Validate();
        var perVcpu = o.RamBytes / (ulong)o.Vcpus;
        var used = o.UsedBytesPerVcpu == 0 ? perVcpu : o.UsedBytesPerVcpu;
        if (used > perVcpu || used % SnapshotFiles.PageSize != 0)
            throw new UsageException($"--used {used} bytes does not fit a vCPU's {perVcpu} bytes in whole 4 KiB pages");
        var files = new SnapshotFiles(directory);
        var created = PrepareDirectory(directory);
        try
        {
            using var m = GuestMachine.Create(config);
            var image = GuestImageHash.Of(m);
            GuestImageHash.Save(files.Image, m);   // before the guest runs: the fresh image
            var sw = Stopwatch.StartNew();
            VcpuState[] states;
            using (var guest = new SaveGuest(m, o.Order, o.QwordsPerPage, used))
            {
                guest.Start();
                guest.WaitForPasses(o.Passes, o.Timeout);
                states = guest.Pause(TimeSpan.FromSeconds(10));
            }
            var runTime = sw.Elapsed;
            sw.Restart();
            var (index, chunks, written) = SnapshotWriter.WriteMemory(files.Memory, m.Ram);
            var indexCrc = index.Write(files.Index);
            var vcpuBytes = VcpuStateMessage.Encode(0, states);
            File.WriteAllBytes(files.Vcpus, vcpuBytes);
            var manifest = new SnapshotManifest
            {
                Vcpus = o.Vcpus, RamBase = m.Ram.Base.Value, RamBytes = o.RamBytes, ImageCrc = image, ImageGenerator = GuestImage.GeneratorId,
                Order = o.Order, QwordsPerPage = o.QwordsPerPage, UsedBytesPerVcpu = used, PassesBeforePause = o.Passes,
                DataPages = index.DataPages, ChunkCrcs = chunks, IndexCrc = indexCrc,
                VcpuStateBytes = vcpuBytes.Length, VcpuStateCrc = Crc32C.Compute(vcpuBytes),
            };
            manifest.Write(files.Manifest);   // last: a directory without a manifest is no snapshot
            return new SaveResult(manifest, written, runTime, sw.Elapsed);
        }
        catch
        {
            foreach (var f in files.All) try { File.Delete(f); } catch (IOException) { }
            if (created) try { Directory.Delete(directory); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Creates the directory (true) or checks that the existing one is empty (false).</summary>
    private static bool PrepareDirectory(string directory)
    {
        if (File.Exists(directory)) throw new UsageException($"{directory} is a file, not a directory");
        if (Directory.Exists(directory))
        {
            if (Directory.EnumerateFileSystemEntries(directory).Any()) throw new UsageException($"{directory} is not empty: save into a new or empty directory");
            return false;
        }
        var parent = Path.GetDirectoryName(Path.GetFullPath(directory));
        if (parent is not null && !Directory.Exists(parent)) throw new UsageException($"{parent} does not exist");
        try { Directory.CreateDirectory(directory); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UsageException($"cannot create {directory}: {e.Message}"); }
        return true;
    }
}
