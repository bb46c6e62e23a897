using System.Globalization;

namespace Faultline.TestKit;

/// <summary>
/// The mappings of /proc/self/maps that Faultline code made, told apart from the runtime's. The total line count
/// moves by a few lines either way on its own (the JIT's W^X double mappings, GC regions committing, malloc arenas), so
/// a leak check compares these exactly and the total only within a slack:
/// kvm_run pages (<c>anon_inode:kvm-vcpu:N</c>), shmem guest RAM (<c>/memfd:faultline-*</c>), and anonymous ranges
/// the caller tracked (guest RAM and system regions have no name): a line whose range is exactly one of them.
/// </summary>
public static class OwnMappings
{
    public static int Count(IReadOnlyCollection<(ulong Start, ulong End)> trackedAnonymous)
    {
        var tracked = trackedAnonymous.ToHashSet();
        var n = 0;
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            if (line.Contains("anon_inode:kvm-vcpu", StringComparison.Ordinal) || line.Contains("/memfd:faultline-", StringComparison.Ordinal))
            {
                n++;
                continue;
            }
            if (tracked.Count == 0) continue;
            // "start-end perms offset dev inode [path]": anonymous lines have no path
            var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length > 5) continue;
            var dash = parts[0].IndexOf('-');
            var start = ulong.Parse(parts[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            var end = ulong.Parse(parts[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (tracked.Contains((start, end))) n++;
        }
        return n;
    }
}
