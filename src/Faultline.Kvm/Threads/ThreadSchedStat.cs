namespace Faultline.Kvm.Threads;

/// <summary>
/// A thread's scheduler statistics as the kernel keeps them (/proc/self/task/TID/schedstat): ns it ran on a CPU, ns it
/// was runnable but waited for one (run_delay), and how many times it was put on a CPU. Between two reads of a thread
/// that existed throughout, wall time − ran − waited is the time it slept (blocked in the kernel).
/// </summary>
public readonly record struct ThreadSchedStat(long RanNs, long WaitedNs, long Slices)
{
    /// <summary>Thread <paramref name="tid"/> of this process, or null when the file can't be read (the thread ended, no schedstats).</summary>
    public static ThreadSchedStat? Of(int tid)
    {
        string text;
        try { text = File.ReadAllText($"/proc/self/task/{tid}/schedstat"); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        var f = text.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return f.Length >= 3 && long.TryParse(f[0], out var ran) && long.TryParse(f[1], out var waited) && long.TryParse(f[2], out var slices)
            ? new ThreadSchedStat(ran, waited, slices) : null;
    }

    /// <summary>
    /// Where thread <paramref name="tid"/> of this process sleeps in the kernel (/proc/self/task/TID/wchan): the
    /// function that called the scheduler, e.g. <c>handle_userfault</c>; "0" while it runs; null when it can't be read.
    /// </summary>
    public static string? WaitChannelOf(int tid)
    {
        try { return File.ReadAllText($"/proc/self/task/{tid}/wchan").Trim(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
