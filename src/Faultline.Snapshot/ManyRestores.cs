using System.Diagnostics;

namespace Faultline.Snapshot;

/// <summary>N restores of one snapshot at once, in this process.</summary>
public sealed record ManyRestoresResult(IReadOnlyList<RestoreReport> Restores, double WallMs);

/// <summary>
/// <c>snapshot restore --count N</c>: N VMs restored from one snapshot at the same time, each with its own memory,
/// engine and fill, on its own thread; they read the same memory file, so after the first reads its pages come from
/// the shared page cache. None records a working set (they would race on the file); all replay one if it exists. The
/// first failure is what this throws, after every restore has ended.
/// </summary>
public static class ManyRestores
{
    public static ManyRestoresResult Run(string directory, RestoreOptions o, int count)
    {
        if (count < 1) throw new UsageException($"--count {count}: at least 1");
        var reports = new RestoreReport?[count];
        var errors = new Exception?[count];
        var threads = new Thread[count];
        var start = Stopwatch.GetTimestamp();
        var each = o with { Record = false, StartTimestamp = start };
        for (var i = 0; i < count; i++)
        {
            var id = i;
            threads[i] = new Thread(() =>
            {
                try { reports[id] = SnapshotRestorer.Restore(directory, each); }
                catch (Exception e) { errors[id] = e; }
            }) { Name = $"fl-restore{id}", IsBackground = true };
            threads[i].Start();
        }
        foreach (var t in threads) t.Join();
        var wall = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        if (errors.FirstOrDefault(e => e is not null) is { } first) throw first;
        return new ManyRestoresResult(reports.Select(r => r!).ToArray(), wall);
    }
}
