using Faultline.Migration.Protocol;
using Microsoft.Win32.SafeHandles;

namespace Faultline.Snapshot;

/// <summary>
/// A snapshot directory opened for restore, every cheap check done before any VM exists: the manifest (format, version,
/// layout), the memory file's presence and size, the page index and vCPU state against their checksums. The memory file
/// stays open for reading; pages are read from it on demand. Any failure: one-line <see cref="SnapshotException"/>, and
/// nothing stays open.
/// </summary>
public sealed class OpenedSnapshot : IDisposable
{
    public SnapshotFiles Files { get; }
    public SnapshotManifest Manifest { get; }
    public PageIndex Index { get; }
    public IReadOnlyList<VcpuState> States { get; }
    /// <summary>The guest image kept with the snapshot, when this build generated it (null: it must be assembled).</summary>
    public Faultline.Guest.GuestImage? SavedImage { get; }
    internal SafeFileHandle Memory { get; }

    private OpenedSnapshot(SnapshotFiles files, SnapshotManifest manifest, PageIndex index, VcpuState[] states, Faultline.Guest.GuestImage? image, SafeFileHandle memory)
    {
        Files = files; Manifest = manifest; Index = index; States = states; SavedImage = image; Memory = memory;
    }

    public static OpenedSnapshot Open(string directory)
    {
        var (files, m) = ReadManifest(directory);
        return Open(files, m);
    }

    /// <summary>
    /// The first, cheap part of <see cref="Open(string)"/>: the manifest (format, version, layout) and the memory file's
    /// size. It says how big the VM is, so a restore starts building it while <see cref="Open(SnapshotFiles, SnapshotManifest)"/>
    /// checks the rest; nothing may run in that VM before the rest has passed.
    /// </summary>
    public static (SnapshotFiles Files, SnapshotManifest Manifest) ReadManifest(string directory)
    {
        if (!Directory.Exists(directory)) throw new SnapshotException($"no snapshot at {directory}: no such directory");
        var files = new SnapshotFiles(directory);
        var m = SnapshotManifest.Read(files.Manifest);
        m.CheckLayout(files.Manifest);
        var info = new FileInfo(files.Memory);
        if (!info.Exists) throw new SnapshotException($"{files.Memory} is missing: the snapshot has no memory");
        if ((ulong)info.Length != m.RamBytes)
            throw new SnapshotException($"{files.Memory} is {(info.Length < (long)m.RamBytes ? "truncated" : "too long")}: {info.Length} bytes, the manifest says {m.RamBytes}");
        return (files, m);
    }

    /// <summary>The rest of <see cref="Open(string)"/>, for a manifest <see cref="ReadManifest"/> has read: the page index, the vCPU state and the kept guest image against their checksums.</summary>
    public static OpenedSnapshot Open(SnapshotFiles files, SnapshotManifest m)
    {
        var index = PageIndex.Read(files.Index, m.Pages, m.IndexCrc);
        try
        {
            if (index.DataPages != m.DataPages) throw new SnapshotException($"{files.Index} has {index.DataPages} data pages, the manifest says {m.DataPages}");
            var states = ReadStates(files.Vcpus, m);
            var image = GuestImageHash.TryLoad(files, m);
            SafeFileHandle memory;
            try { memory = File.OpenHandle(files.Memory, FileMode.Open, FileAccess.Read); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new SnapshotException($"cannot open {files.Memory}: {e.Message}"); }
            return new OpenedSnapshot(files, m, index, states, image, memory);
        }
        catch
        {
            index.Dispose();
            throw;
        }
    }

    private static VcpuState[] ReadStates(string path, SnapshotManifest m)
    {
        if (!File.Exists(path)) throw new SnapshotException($"{path} is missing: the snapshot has no vCPU state");
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length != m.VcpuStateBytes) throw new SnapshotException($"{path} is {bytes.Length} bytes, the manifest says {m.VcpuStateBytes}");
        var crc = Crc32C.Compute(bytes);
        if (crc != m.VcpuStateCrc) throw new SnapshotException($"{path} fails its checksum: crc32c 0x{crc:x8}, the manifest says 0x{m.VcpuStateCrc:x8}");
        try { return VcpuStateMessage.Decode(bytes, m.Vcpus).Vcpus; }
        catch (MigrationException e) { throw new SnapshotException($"{path}: {e.Message}"); }
    }

    public void Dispose()
    {
        Memory.Dispose();
        Index.Dispose();
    }
}
