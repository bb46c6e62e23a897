namespace Faultline.Snapshot;

/// <summary>The files of a snapshot directory and the format constants they share.</summary>
public sealed record SnapshotFiles(string Directory)
{
    /// <summary>The one format this build writes and reads; a manifest of another version is refused.</summary>
    public const int FormatVersion = 1;
    public const string FormatName = "faultline-snapshot";
    public const int PageSize = 4096;
    /// <summary>Pages per manifest checksum chunk (1 MiB).</summary>
    public const int ChunkPages = 256;

    public string Manifest => Path.Combine(Directory, "manifest.json");
    /// <summary>Guest RAM byte for byte, page i at offset i × 4096; zero pages are holes.</summary>
    public string Memory => Path.Combine(Directory, "memory.img");
    /// <summary>Which pages hold data, and a CRC32C per page (<see cref="PageIndex"/>).</summary>
    public string Index => Path.Combine(Directory, "pages.idx");
    /// <summary>The paused vCPUs (Faultline.Migration's tagged vCPU state encoding).</summary>
    public string Vcpus => Path.Combine(Directory, "vcpus.bin");
    /// <summary>The first touches of a recorded restore, in order (<see cref="WorkingSet"/>).</summary>
    public string WorkingSet => Path.Combine(Directory, "workingset.bin");

    /// <summary>The generated guest image the snapshot ran, for a restore by the same build (<see cref="GuestImageHash"/>).</summary>
    public string Image => Path.Combine(Directory, "guest.img");

    public IEnumerable<string> All => [Manifest, Memory, Index, Vcpus, WorkingSet, Image];
}
