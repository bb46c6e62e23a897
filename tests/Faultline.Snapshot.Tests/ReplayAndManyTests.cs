using Faultline.Paging;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary>Working-set record and replay, and many restores of one snapshot at once.</summary>
public sealed class ReplayAndManyTests
{
    [KvmFact]
    public void A_recorded_working_set_is_the_first_touch_order_and_its_replay_avoids_those_faults()
    {
        using var snap = TempSnapshot.Save(ram: 16 << 20);
        var first = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits));
        Assert.True(first.Recorded);
        Assert.False(first.Replayed);
        // while recording, the fill waits for the guest: every page the guest touched was a fault, and is in the recording
        var recorded = WorkingSet.Read(snap.Files.WorkingSet, snap.Saved.Manifest.Pages);
        Assert.Equal(first.PagesDemandTotal, recorded.Length);
        Assert.Equal(recorded.Length, recorded.Distinct().Count());
        // a sequential guest resumed at vCPU 0's page p touches p, p+1, … : the recording keeps each vCPU's order
        var ofVcpu0 = recorded.Where(p => p < snap.Saved.Manifest.Pages / 2).ToArray();
        Assert.True(ofVcpu0.Zip(ofVcpu0.Skip(1)).Count(x => x.Second != x.First + 1) <= 2, "vCPU 0's touches are not in its sequential order");

        var second = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Exits));
        Assert.True(second.Replayed);
        Assert.False(second.Recorded);
        Assert.Equal(recorded.Length, second.WorkingSetPages);
        Assert.Equal(0UL, second.GuestMismatches);
        Assert.InRange(second.FaultsAvoidedByReplay, 0, recorded.Length);
        Assert.True(second.FaultsAvoidedByReplay > 0, "the replay prefetched none of the working set before the guest touched it");
        Assert.True(second.PagesDemandTotal < first.PagesDemandTotal, $"{second.PagesDemandTotal} faults with replay, {first.PagesDemandTotal} without");
    }

    [KvmFact]
    public void Working_set_files_round_trip_in_order_and_a_damaged_one_is_refused()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fl-ws-{Guid.NewGuid():N}");
        try
        {
            uint[] order = [5, 6, 7, 100, 2, 3, 4, 99, 8];
            WorkingSet.Write(path, order, 128);
            Assert.Equal(order, WorkingSet.Read(path, 128));
            Assert.Throws<SnapshotException>(() => WorkingSet.Read(path, 256));
            var b = File.ReadAllBytes(path);
            b[22] ^= 1;
            File.WriteAllBytes(path, b);
            Assert.Contains("fails its checksum", Assert.Throws<SnapshotException>(() => WorkingSet.Read(path, 128)).Message);
        }
        finally { File.Delete(path); }
    }

    [KvmFact]
    public void Many_restores_of_one_snapshot_at_once_each_verify_their_own_memory()
    {
        using var snap = TempSnapshot.Save();
        var before = ProcessResources.Now();
        var r = ManyRestores.Run(snap.Dir, new RestoreOptions(PagingMode.Exits), 4);
        Assert.Equal(4, r.Restores.Count);
        foreach (var c in r.Restores)
        {
            Assert.Equal(0UL, c.GuestMismatches);
            Assert.Equal((long)snap.Saved.Manifest.DataPages, c.PagesDemand + c.PagesPrefetched);
        }
        Assert.False(File.Exists(snap.Files.WorkingSet));   // concurrent restores record nothing
        var after = ProcessResources.Settled(before);
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a restore left a thread running");
    }
}
