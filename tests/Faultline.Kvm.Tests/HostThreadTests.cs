using Faultline.Kvm.Threads;

namespace Faultline.Kvm.Tests;

public sealed class HostThreadTests
{
    /// <summary>Field <paramref name="n"/> (1-based, as in proc(5)) of /proc/thread-self/stat.</summary>
    private static string StatField(int n)
    {
        var s = File.ReadAllText("/proc/thread-self/stat");
        var rest = s[(s.LastIndexOf(')') + 2)..].Split(' ');
        return rest[n - 3];
    }

    [Fact]
    public void Ids_nice_values_and_cpu_time_are_the_calling_threads_own()
    {
        var result = new string?[3];
        long cpuBefore = 0, cpuAfter = 0, wallNs = 0;
        var t = new Thread(() =>
        {
            result[0] = HostThread.CurrentId.ToString();
            result[1] = Path.GetFileName(new DirectoryInfo("/proc/thread-self").ResolveLinkTarget(false)!.FullName);
            Assert.True(HostThread.TrySetNice(HostThread.CurrentId, 3));   // lowering priority needs no privilege
            result[2] = StatField(19);                                      // nice
            var wall = System.Diagnostics.Stopwatch.StartNew();
            cpuBefore = HostThread.CpuTimeNs;
            // spin until this thread has run 20 ms (however long a shared 2-core host makes that take)
            while (HostThread.CpuTimeNs - cpuBefore < 20_000_000 && wall.Elapsed < TimeSpan.FromSeconds(20)) { }
            cpuAfter = HostThread.CpuTimeNs;
            wallNs = (long)wall.Elapsed.TotalNanoseconds;
        });
        t.Start();
        t.Join();
        Assert.Equal(result[1], result[0]);
        Assert.Equal("3", result[2]);
        Assert.InRange(cpuAfter - cpuBefore, 20_000_000, wallNs + 1_000_000);   // it ran, and no longer than the wall time passed
        Assert.False(HostThread.TrySetNice(0, 0));                          // no thread id, no call
    }

    [Fact]
    public void The_normal_policy_is_always_allowed_and_a_bad_one_reports_its_errno()
    {
        Assert.True(HostThread.TrySetPolicy(HostThread.CurrentId, SchedulingPolicy.Normal, 0, out var errno));
        Assert.Equal(0, errno);
        Assert.False(HostThread.TrySetPolicy(HostThread.CurrentId, SchedulingPolicy.Fifo, 1000, out errno));   // priority out of 1..99
        Assert.Equal(22, errno);                                                                                 // EINVAL
    }

    [Fact]
    public void A_slice_set_on_a_thread_is_what_the_kernel_reports_back_with_its_nice_value()
    {
        string? nice = null;
        TimeSpan? slice = null;
        var ok = false;
        var t = new Thread(() =>
        {
            ok = HostThread.TrySetSlice(HostThread.CurrentId, 4, TimeSpan.FromMicroseconds(300), out _);
            slice = HostThread.SliceOf(HostThread.CurrentId);
            nice = StatField(19);
        });
        t.Start();
        t.Join();
        Assert.True(ok);
        Assert.Equal("4", nice);
        Assert.Equal(TimeSpan.FromMicroseconds(300), slice);   // Linux >= 6.12 keeps a normal task's requested slice
    }
}
