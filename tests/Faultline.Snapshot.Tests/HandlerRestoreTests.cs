using Faultline.Paging;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary><c>snapshot restore --handler</c>: a restore whose pages another handler serves, and what happens when that handler dies.</summary>
public sealed class HandlerRestoreTests : IDisposable
{
    private readonly string _socket = Path.Combine(Path.GetTempPath(), $"fl-handler-{Guid.NewGuid():N}.sock");

    [KvmFact]
    public void A_restore_served_by_the_handler_verifies_every_page()
    {
        using var snap = TempSnapshot.Save();
        using var opened = OpenedSnapshot.Open(snap.Dir);
        using var server = new SnapshotServer(opened, _socket, _ => { });
        server.Start();
        var r = HandlerRestore.Restore(snap.Dir, _socket, new RestoreOptions(PagingMode.Missing));
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal((long)opened.Index.DataPages, server.PagesServed);   // every data page is in the used range: each read once
    }

    [KvmFact]
    public void When_the_handler_dies_mid_restore_the_vm_is_stopped_with_one_error_and_nothing_hangs()
    {
        using var snap = TempSnapshot.Save(ram: 32 << 20);
        using var opened = OpenedSnapshot.Open(snap.Dir);
        var server = new SnapshotServer(opened, _socket, _ => { });
        server.Start();
        var killer = new Thread(() =>
        {
            while (server.PagesServed < 200) Thread.Sleep(1);
            server.Dispose();   // the handler's threads end, its end of the socket and its copy of the userfaultfd close
        });
        killer.Start();
        var before = ProcessResources.Now();
        var e = Assert.Throws<PageUnavailableException>(() => HandlerRestore.Restore(snap.Dir, _socket, new RestoreOptions(PagingMode.Missing) { Timeout = TimeSpan.FromSeconds(60) }));
        killer.Join();
        Assert.Contains("went away during the restore", e.Message);
        Assert.True(server.PagesServed < (long)opened.Index.DataPages, "the handler served everything before it died: the test did not test");
        var after = ProcessResources.Settled(before);
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a vCPU thread was left behind");
    }

    public void Dispose()
    {
        try { File.Delete(_socket); } catch (IOException) { }
    }
}
