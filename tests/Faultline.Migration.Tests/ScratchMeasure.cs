using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.TestKit;
using Xunit.Abstractions;
using static Faultline.TestKit.Units;

namespace Faultline.Migration.Tests;

public sealed class ScratchMeasure(ITestOutputHelper output)
{
    [Fact]
    public void ScratchRaw()
    {
        for (var i = 0; i < 3; i++) output.WriteLine($"raw 1 GiB: {Transport.RawStream.Measure(1UL << 30).TotalMilliseconds:0.0} ms");
    }

    [KvmFact]
    public void ScratchInstall()
    {
        foreach (var mode in new[] { PagingMode.Exits, PagingMode.Missing })
        {
            using var m = Faultline.Guest.GuestMachine.Create(new Faultline.Guest.MachineConfig(2, 256 * MiB));
            using var shadow = new Destination.ReceivedImage(m.Ram.Size);
            using var e = EngineFactory.Create(new Faultline.Paging.Engines.PagingOptions(mode, Backing.Anonymous, Readers: 2));
            e.Start(m, new Faultline.Paging.Sources.PatternPageSource(1));
            var page = new byte[4096]; Random.Shared.NextBytes(page);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            uint crc = 0;
            for (ulong i = 0; i < m.Ram.PageCount; i++) crc ^= Protocol.Crc32C.Compute(page);
            var tCrc = sw.Elapsed.TotalMilliseconds; sw.Restart();
            for (ulong i = 0; i < m.Ram.PageCount; i++) shadow.Write(i, page);
            var tShadow = sw.Elapsed.TotalMilliseconds; sw.Restart();
            using (var memfd = GuestRegion.Create(m.Ram.Base, m.Ram.Size, Backing.Shmem))
            {
                for (ulong i = 0; i < m.Ram.PageCount; i++) memfd.WriteBacking(i << 12, page);
                output.WriteLine($"pwrite memfd {sw.Elapsed.TotalMilliseconds:0.0} ms");
                sw.Restart();
            }
            using (var big = GuestRegion.Create(m.Ram.Base, m.Ram.Size, Backing.Shmem))
            {
                var chunk = new byte[256 * 4096];
                for (ulong i = 0; i < m.Ram.PageCount; i += 256) big.WriteBacking(i << 12, chunk);
                output.WriteLine($"pwrite memfd 1MiB chunks {sw.Elapsed.TotalMilliseconds:0.0} ms");
                sw.Restart();
            }
            for (ulong i = 0; i < m.Ram.PageCount; i++) e.TryInstall(m.Ram.Base + (i << 12), page);
            var tInstall = sw.Elapsed.TotalMilliseconds;
            output.WriteLine($"{mode}: {m.Ram.PageCount} pages: crc {tCrc:0.0} ms, shadow {tShadow:0.0} ms, install {tInstall:0.0} ms {crc}");
        }
    }

    [KvmFact]
    public void Scratch()
    {
        var mb = ulong.Parse(Environment.GetEnvironmentVariable("SCRATCH_MB") ?? "64");
        var mode = Enum.Parse<PagingMode>(Environment.GetEnvironmentVariable("SCRATCH_MODE") ?? "Exits");
        for (var i = 0; i < 3; i++)
        {
            var o = MigrationHarness.Run(new Source.SourceOptions(2, mb * MiB), a => new Destination.DestinationOptions(a, mode));
            using var s = o.SourceEnd;
            if (o.DestinationError is not null) throw o.DestinationError;
            var r = o.Report!;
            output.WriteLine($"down {r.DowntimeMs:0.000} ms setup {r.SetupMs:0.0} postcopy {r.PostcopyMs:0.0} total {r.TotalMs:0.0} demand {r.PagesDemand} req {r.DemandRequests} already {r.DemandAlreadyPushed} lat p50 {r.FaultLatencyUs.P50:0.0} p90 {r.FaultLatencyUs.P90:0.0} max {r.FaultLatencyUs.Max:0.0} n {r.FaultLatencyUs.Count} blocked {string.Join(",", r.VcpuBlockedMs.Select(b => b.ToString("0.0")))} mism {r.GuestMismatches} srcpause {o.Source!.PauseMs:0.000} statesent {o.Source.PauseToStateSentMs:0.000}");
        }
    }
}
