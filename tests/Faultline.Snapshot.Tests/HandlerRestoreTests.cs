using System.Net.Sockets;
using Faultline.Kvm.Io;
using Faultline.Kvm.Uffd;
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
        // what the restoring side counted for itself (mincore after the run) against what the handler says it served
        Assert.Equal(server.PagesServed, r.PagesDemand);
        Assert.Equal(server.ZeroPagesServed, r.PagesDemandZero);
        Assert.True(r.VcpuSleptMs > 0, "the vCPUs never slept: they cannot have waited for the handler");
    }

    [KvmFact]
    public void A_handler_that_reads_faults_but_never_answers_is_noticed_after_the_handler_timeout()
    {
        using var snap = TempSnapshot.Save(ram: 32 << 20);
        var before = ProcessResources.Now();
        var silent = new SilentHandler(_socket);
        var timer = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<PageUnavailableException>(() => HandlerRestore.Restore(snap.Dir, _socket,
            new RestoreOptions(PagingMode.Missing) { Timeout = TimeSpan.FromSeconds(60), HandlerTimeout = TimeSpan.FromSeconds(1) }));
        timer.Stop();
        Assert.Contains("is alive but left vCPU", e.Message);
        var faultsRead = silent.FaultsRead;
        silent.Dispose();   // its copy of the userfaultfd closes
        Assert.True(faultsRead > 0, "the handler read no fault: the test did not test");
        Assert.InRange(timer.Elapsed.TotalSeconds, 1, 30);   // after the timeout, long before the restore's own
        var after = ProcessResources.Settled(before);
        Assert.True(after.FaultlineThreads <= before.FaultlineThreads, "a vCPU thread was left behind");
        Assert.True(after.Kernel.Within(before.Kernel), $"left behind: {after.Kernel} (before: {before.Kernel})");
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

    /// <summary>A page handler that takes the regions and the userfaultfd and reads every fault message, but never resolves one.</summary>
    private sealed class SilentHandler : IDisposable
    {
        private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        private readonly Thread _thread;
        private readonly StopEvent _stop = new();
        private Userfaultfd? _uffd;
        private Socket? _peer;
        private int _faults;

        public int FaultsRead => Volatile.Read(ref _faults);

        public SilentHandler(string path)
        {
            _listener.Bind(new UnixDomainSocketEndPoint(path));
            _listener.Listen(1);
            _thread = new Thread(Serve) { IsBackground = true };
            _thread.Start();
        }

        private void Serve()
        {
            _peer = _listener.Accept();
            var buf = new byte[4096];
            FdPassing.Receive(_peer.SafeHandle, buf, out _uffd);
            while (_uffd!.WaitReadable(_stop))
                if (_uffd.ReadEvent().Kind == UffdEventKind.PageFault) Interlocked.Increment(ref _faults);
        }

        public void Dispose()
        {
            _stop.Set();
            _listener.Dispose();   // ends an Accept still waiting
            _thread.Join(TimeSpan.FromSeconds(10));
            _uffd?.Dispose();
            _peer?.Dispose();
            _stop.Dispose();
        }
    }
}
