using Faultline.Guest;

namespace Faultline.Snapshot.Tests;

/// <summary>A snapshot saved from a real guest into a fresh temporary directory, removed on Dispose.</summary>
internal sealed class TempSnapshot : IDisposable
{
    public string Dir { get; }
    public SaveResult Saved { get; }
    public SnapshotFiles Files => new(Dir);

    private TempSnapshot(string dir, SaveResult saved) { Dir = dir; Saved = saved; }

    public static string NewDir() => Path.Combine(Path.GetTempPath(), $"fl-snap-test-{Guid.NewGuid():N}");

    /// <summary>2 vCPUs × 4 MiB by default; half of each range used (the rest holes), paused after one whole pass.</summary>
    public static TempSnapshot Save(int vcpus = 2, ulong ram = 8 << 20, long passes = 1, int qwords = 512, AccessOrder order = AccessOrder.Sequential, int usedPercent = 50)
    {
        var dir = NewDir();
        var used = ram / (ulong)vcpus * (ulong)usedPercent / 100 / 4096 * 4096;
        return new TempSnapshot(dir, SnapshotSaver.Save(dir, new SaveOptions(vcpus, ram, order, qwords) { UsedBytesPerVcpu = used, Passes = passes }));
    }

    /// <summary>Overwrites bytes of a file in place.</summary>
    public static void Patch(string path, long offset, ReadOnlySpan<byte> bytes)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Position = offset;
        f.Write(bytes);
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
