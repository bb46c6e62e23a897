using Faultline.Kvm.Memory;
using Faultline.Migration.Destination;
using Faultline.Migration.Reporting;
using Faultline.Migration.Source;
using Faultline.Migration.Transport;
using Faultline.Paging;

namespace Faultline.Migration.Tests;

/// <summary>Both ends in this process over a real loopback TCP socket: the source serves on its own thread.</summary>
internal static class MigrationHarness
{
    public sealed record Outcome(MigrationReport? Report, SourceResult? Source, Exception? DestinationError, Exception? SourceError, MigrationSource SourceEnd);

    /// <summary>Runs one migration; the returned source end is still alive (its memory kept) and must be disposed by the caller.</summary>
    public static Outcome Run(SourceOptions so, Func<MigrationAddress, DestinationOptions> dest, CancellationToken destinationCt = default) =>
        Run(MigrationSource.Create(so), dest, destinationCt);

    /// <summary>Migrates the guest of <paramref name="src"/> (created by the caller) to a fresh destination (cancelled by <paramref name="destinationCt"/>).</summary>
    public static Outcome Run(MigrationSource src, Func<MigrationAddress, DestinationOptions> dest, CancellationToken destinationCt = default)
    {
        using var listener = new MigrationListener(MigrationAddress.Parse("127.0.0.1:0"));
        SourceResult? sr = null;
        Exception? se = null;
        var t = new Thread(() =>
        {
            try { sr = src.Serve(listener); }
            catch (Exception e) { se = e; }
        }) { Name = "test-source", IsBackground = true };
        t.Start();
        MigrationReport? report = null;
        Exception? de = null;
        try { report = new MigrationDestination(dest(listener.Address)).Run(null, destinationCt); }
        catch (Exception e) { de = e; }
        if (!t.Join(TimeSpan.FromSeconds(60))) throw new TimeoutException("source end did not finish");
        return new Outcome(report, sr, de, se, src);
    }

    public static Outcome Run(int vcpus, ulong ram, PagingMode mode, Backing backing = Backing.Anonymous, ulong pushStart = 0) =>
        Run(new SourceOptions(vcpus, ram) { WriteFraction = 0.75, PushStartPage = pushStart },
            a => new DestinationOptions(a, mode, backing));
}
