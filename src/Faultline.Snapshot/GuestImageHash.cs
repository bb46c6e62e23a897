using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// The generated guest image a snapshot ran (page tables, GDT, IDT, kernel and workload code: GPA [0, 0x80000) of a
/// fresh machine). Its CRC32C is in the manifest: a snapshot is only restored into the image it ran, because registers
/// point into that code. (A CRC, not a cryptographic hash: it tells builds apart, and costs no crypto library load.)
/// <para>The bytes are kept too (<c>guest.img</c>) with the generator's id (<see cref="GuestImage.GeneratorId"/>):
/// a restore by the same build loads them instead of assembling the code again (Iced: 3–5 ms natively compiled, 20–60 ms
/// under the JIT), which is most of the way to the first instruction. Another build assembles and compares the CRC.</para>
/// </summary>
internal static class GuestImageHash
{
    public static uint Of(GuestMachine fresh) => Crc32C.Compute(fresh.System.Span(new GuestAddress(0), GuestImage.Span));

    /// <summary>
    /// Refuses a machine whose assembled image is not the one the snapshot ran (its registers point into that code). A
    /// kept image (<see cref="OpenedSnapshot.SavedImage"/>) was checked against the same CRC when it was read.
    /// </summary>
    public static void CheckRan(OpenedSnapshot snap, GuestMachine machine)
    {
        var m = snap.Manifest;
        if (snap.SavedImage is null && Of(machine) is var image && image != m.ImageCrc)
            throw new SnapshotException($"{snap.Files.Manifest}: the snapshot ran guest image crc32c 0x{m.ImageCrc:x8}, this build generates 0x{image:x8}: restore it with the build that saved it");
    }

    /// <summary>Keeps a fresh machine's image bytes (sparse: the zero pages are holes).</summary>
    public static void Save(string path, GuestMachine fresh)
    {
        var bytes = fresh.System.Span(new GuestAddress(0), GuestImage.Span);
        using var f = File.Create(path);
        f.SetLength(GuestImage.Span);
        for (var p = 0; p < GuestImage.Span; p += (int)GuestAddress.PageSize)
        {
            var page = bytes.Slice(p, (int)GuestAddress.PageSize);
            if (!page.ContainsAnyExcept((byte)0)) continue;
            f.Position = p;
            f.Write(page);
        }
    }

    /// <summary>Whether <see cref="TryLoad"/> will load the image rather than say it must be assembled (known from the manifest, before the checks).</summary>
    public static bool IsKept(SnapshotFiles files, SnapshotManifest m) => m.ImageGenerator == GuestImage.GeneratorId && File.Exists(files.Image);

    /// <summary>
    /// The saved image, when this build generated it (the manifest's generator id is this build's) and the file is
    /// whole; null when another build saved it (then the code is assembled and compared). A file of this build that
    /// fails its checksum is a bad snapshot.
    /// </summary>
    public static GuestImage? TryLoad(SnapshotFiles files, SnapshotManifest m)
    {
        if (!IsKept(files, m)) return null;
        var bytes = File.ReadAllBytes(files.Image);
        var crc = bytes.Length == GuestImage.Span ? Crc32C.Compute(bytes) : 0;
        if (bytes.Length != GuestImage.Span || crc != m.ImageCrc)
            throw new SnapshotException($"{files.Image} fails its checksum: crc32c 0x{crc:x8} of {bytes.Length} bytes, the manifest says 0x{m.ImageCrc:x8} of {GuestImage.Span}");
        return GuestImage.Loaded(bytes, m.Vcpus);
    }
}
