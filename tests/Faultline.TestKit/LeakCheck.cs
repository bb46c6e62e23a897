namespace Faultline.TestKit;

/// <summary>What this process holds right now, from /proc/self: open fds, threads, mappings, POSIX timers, and the kernel objects Faultline makes.</summary>
/// <remarks><see cref="OurMappings"/> counts the mappings Faultline makes (guest RAM is named "faultline-*", vCPU pages
/// are "anon_inode:kvm-vcpu"); the total also moves with the runtime and glibc's thread-stack cache.
/// <see cref="PosixTimers"/> are the process's timer_create timers (/proc/self/timers: not fds, so no fd count sees them;
/// the runtime creates none). <see cref="Kernel"/> counts userfaultfds, KVM VMs and vCPUs by their fds' link targets.</remarks>
public sealed record ProcessResources(int Fds, int Threads, int Mappings, int FaultlineThreads, int OurMappings, int PosixTimers, KernelObjects Kernel)
{
    public static ProcessResources Now()
    {
        var fds = Directory.GetFiles("/proc/self/fd");
        var tasks = Directory.GetDirectories("/proc/self/task");
        var ours = 0;
        foreach (var t in tasks)
        {
            try { if (File.ReadAllText(Path.Combine(t, "comm")).StartsWith("fl-", StringComparison.Ordinal)) ours++; }
            catch (IOException) { } // the thread ended while we looked
        }
        var maps = File.ReadAllLines("/proc/self/maps");
        var ourMaps = maps.Count(l => l.Contains("faultline", StringComparison.Ordinal) || l.Contains("kvm", StringComparison.Ordinal));
        return new ProcessResources(fds.Length, tasks.Length, maps.Length, ours, ourMaps, CountPosixTimers(), KernelObjects.Of(FdTargets(fds)));
    }

    /// <summary>timer_create timers of this process: one "ID:" line each in /proc/self/timers.</summary>
    public static int CountPosixTimers() => File.ReadLines("/proc/self/timers").Count(l => l.StartsWith("ID:", StringComparison.Ordinal));

    /// <summary>Where each of <paramref name="fds"/> (paths in /proc/self/fd) points; one closed while we looked is skipped.</summary>
    private static IEnumerable<string> FdTargets(string[] fds)
    {
        foreach (var fd in fds)
        {
            string? target;
            try { target = new FileInfo(fd).LinkTarget; }
            catch (IOException) { continue; }
            if (target is not null) yield return target;
        }
    }

    /// <summary>Waits briefly for threads that are finishing to vanish (and what they hold to be closed), then reports the current state.</summary>
    public static ProcessResources Settled(ProcessResources baseline)
    {
        var now = Now();
        for (var i = 0; i < 50 && (now.FaultlineThreads > baseline.FaultlineThreads || now.Fds > baseline.Fds || now.PosixTimers > baseline.PosixTimers
                                   || !now.Kernel.Within(baseline.Kernel)); i++)
        {
            Thread.Sleep(20);
            now = Now();
        }
        return now;
    }

    /// <summary>Fails the test if this process holds more userfaultfds, KVM VMs or vCPUs than at <paramref name="baseline"/>.</summary>
    public void AssertKernelObjectsWithin(ProcessResources baseline) =>
        Xunit.Assert.True(Kernel.Within(baseline.Kernel), $"userfaultfds, VMs, vCPUs left behind: {baseline.Kernel} → {Kernel}");
}
