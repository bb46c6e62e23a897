using System.Diagnostics;
using System.Text.Json;
using Faultline.Guest.Probe;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>Tests that count this process's fds and threads: they run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public sealed class SerialCollection;

[Collection(nameof(SerialCollection))]
public sealed class ProbeResourceTests
{
    [KvmFact]
    public void The_probe_leaves_no_fd_thread_or_mapping_behind()
    {
        HostProbe.Run(new ProbeOptions(TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(5)));   // warm up: JIT, runtime threads
        var before = ProcessResources.Now();
        for (var i = 0; i < 5; i++) HostProbe.Run(new ProbeOptions(TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(5)));
        var after = ProcessResources.Settled(before);
        Assert.True(after.Fds <= before.Fds, $"fds {before.Fds} → {after.Fds}");   // a leak is growth; a finalizer may close one meanwhile
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, $"fl- threads {before.FaultlineThreads} → {after.FaultlineThreads}");
        Assert.InRange(after.Mappings - before.Mappings, -16, 16);   // 5 probes x 4 VMs x (system + RAM + kvm_run) would be 60
    }

    /// <summary>
    /// RLIMIT_SIGPENDING is shared by all of a user's processes; when another process fills it with queued real-time
    /// signals, a real-time kick fails with EAGAIN and is lost. The probe must still stop its spinning vCPUs.
    /// </summary>
    [KvmFact]
    public void The_probe_stops_its_vcpus_even_when_the_signal_queue_is_full()
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "faultline.dll");
        var psi = new ProcessStartInfo("prlimit", ["--sigpending=0", "dotnet", dll, "probe", "--json"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("probe under a full signal queue did not finish within 60 s");
        }
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {stderr.Result}");
        using var doc = JsonDocument.Parse(stdout.Result);
        Assert.True(doc.RootElement.GetProperty("instruction_rate").GetProperty("cpl0").GetProperty("iterations").GetUInt64() > 0);
    }
}
