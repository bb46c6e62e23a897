using System.Net.Sockets;
using System.Text;
using Faultline.Kvm.Io;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary>
/// <c>snapshot serve</c> end to end with a client that does what Firecracker does: maps guest memory, registers it
/// with a userfaultfd (MISSING, EVENT_REMOVE), connects to the handler's socket and sends the regions JSON with the
/// userfaultfd as SCM_RIGHTS, then touches its memory.
/// </summary>
public sealed class FirecrackerProtocolTests : IDisposable
{
    private readonly string _socket = Path.Combine(Path.GetTempPath(), $"fl-serve-{Guid.NewGuid():N}.sock");
    private readonly List<string> _log = [];

    private void Log(string line) { lock (_log) _log.Add(line); }

    private string[] Lines() { lock (_log) return [.. _log]; }

    private sealed class Vmm : IDisposable
    {
        public GuestRegion Memory { get; }
        public Userfaultfd Uffd { get; }
        public Socket Socket { get; }

        public Vmm(string socket, ulong bytes)
        {
            Memory = GuestRegion.Create(new GuestAddress(GuestLayoutBase), bytes, Backing.Anonymous, "faultline-fc-client");
            Uffd = Userfaultfd.Open(UffdFeatures.EventRemove);
            Uffd.Register(Memory.Host, bytes, UffdRegisterMode.Missing);
            Socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Socket.Connect(new UnixDomainSocketEndPoint(socket));
        }

        public string Regions(ulong offset = 0, ulong? size = null) =>
            $"[{{\"base_host_virt_addr\":{Memory.Host.Value},\"size\":{size ?? Memory.Size},\"offset\":{offset},\"page_size\":4096,\"page_size_kib\":4096}}]";

        public void Send(string json) => FdPassing.Send(Socket.SafeHandle, Encoding.UTF8.GetBytes(json), Uffd);

        public void Dispose()
        {
            Socket.Dispose();
            Uffd.Dispose();
            Memory.Dispose();
        }
    }

    private const ulong GuestLayoutBase = 0x400000;

    [KvmFact]
    public void Every_page_a_firecracker_style_client_touches_comes_from_the_snapshot_and_removed_ranges_read_as_zero()
    {
        using var snap = TempSnapshot.Save();
        using var opened = OpenedSnapshot.Open(snap.Dir);
        using var server = new SnapshotServer(opened, _socket, Log);
        server.Start();
        using var vmm = new Vmm(_socket, snap.Saved.Manifest.RamBytes);
        vmm.Send(vmm.Regions());
        var file = File.ReadAllBytes(snap.Files.Memory);
        var wrong = 0;
        for (var off = 0; off < file.Length; off += 4096)   // each first touch sleeps in the userfaultfd until the handler answers
            if (!vmm.Memory.Span(vmm.Memory.Base + (ulong)off, 4096).SequenceEqual(file.AsSpan(off, 4096))) wrong++;
        Assert.Equal(0, wrong);
        Assert.Equal((long)opened.Index.DataPages, server.PagesServed);
        Assert.Equal((long)opened.Index.ZeroPages, server.ZeroPagesServed);
        Assert.Contains(Lines(), l => l.StartsWith($"serving pid {Environment.ProcessId} ", StringComparison.Ordinal));   // SO_PEERCRED

        // UFFD_EVENT_REMOVE: the VMM drops a data page (a balloon would); touched again, it is a zero page, not re-read
        ulong data = 0;
        while (!opened.Index.IsData(data)) data++;
        vmm.Memory.DropMapping(vmm.Memory.Base + data * 4096, 4096);
        Assert.True(vmm.Memory.Span(vmm.Memory.Base + data * 4096, 4096).IndexOfAnyExcept((byte)0) < 0, "a removed page came back with the snapshot's bytes");
        Assert.Equal((long)opened.Index.DataPages, server.PagesServed);
    }

    [KvmTheory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("{}", "not a JSON array")]
    [InlineData("[]", "lists no region")]
    [InlineData("[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096},{\"base_host_virt_addr\":8192,\"size\":4096,\"offset\":0,\"page_size\":4096}]", "overlap")]
    [InlineData("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":2097152}]", "page size 2097152")]
    [InlineData("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":1099511627776,\"page_size\":4096}]", "past the")]
    public void A_malformed_region_message_is_refused_in_one_line_and_the_server_goes_on_serving(string json, string expected)
    {
        using var snap = TempSnapshot.Save(vcpus: 1, ram: 4 << 20);
        using var opened = OpenedSnapshot.Open(snap.Dir);
        using var server = new SnapshotServer(opened, _socket, Log);
        server.Start();
        using (var bad = new Vmm(_socket, opened.Manifest.RamBytes))
        {
            bad.Send(json);
            for (var i = 0; i < 500 && server.Refused == 0; i++) Thread.Sleep(10);
        }
        Assert.Equal(1, server.Refused);
        var refusal = Assert.Single(Lines(), l => l.StartsWith("refused", StringComparison.Ordinal));
        Assert.Contains(expected, refusal);
        Assert.DoesNotContain('\n', refusal);

        using var good = new Vmm(_socket, opened.Manifest.RamBytes);
        good.Send(good.Regions());
        var file = File.ReadAllBytes(snap.Files.Memory);
        Assert.True(good.Memory.Span(good.Memory.Base, file.Length).SequenceEqual(file));
    }

    public void Dispose()
    {
        try { File.Delete(_socket); } catch (IOException) { }
    }
}
