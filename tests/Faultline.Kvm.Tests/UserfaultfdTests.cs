using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// userfaultfd under running vCPUs: MISSING + UFFDIO_COPY and MINOR (shmem) + UFFDIO_CONTINUE served by a reader thread,
/// ZEROPAGE, WAKE after DONTWAKE / EEXIST, and the SIGBUS feature's vCPU exits at CPL0 and CPL3 (HOST.md).
/// </summary>
public sealed unsafe class UserfaultfdTests
{
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(60);
    private const ulong PageSize = GuestAddress.PageSize;

    private static ResolveOutcome CopyPage(Userfaultfd uffd, HostAddress dst, byte[] page)
    {
        // SAFETY: page is pinned for the call; UFFDIO_COPY reads exactly one page from it.
        fixed (byte* p = page) return uffd.Copy(dst, p, PageSize);
    }

    /// <summary>Runs the workload on every vCPU while the reader serves faults; a reader failure is reported first.</summary>
    private static RunOutcome RunServed(GuestMachine m, UffdReader reader, Workload w, Func<int, WorkloadArgs> args, PrivilegeLevel level)
    {
        RunOutcome outcome;
        try
        {
            outcome = m.Run(w, args, level, timeout: RunTimeout);
        }
        catch (GuestException)
        {
            reader.ThrowIfFailed();
            throw;
        }
        reader.ThrowIfFailed();
        return outcome.ThrowIfFailed();
    }

    /// <summary>Each page of guest RAM was resolved exactly once, and every resolution installed it.</summary>
    private static void AssertEachPageResolvedOnce(GuestMachine m, UffdReader reader)
    {
        var log = reader.Log;
        var hits = new int[m.Ram.PageCount];
        foreach (var (fault, _) in log)
        {
            Assert.Equal(0UL, fault.Address % PageSize);
            hits[Pattern.PageIndex(m, Pattern.GpaOf(m, fault.Address))]++;
        }
        Assert.Equal((int)m.Ram.PageCount, log.Count);
        Assert.All(hits, h => Assert.Equal(1, h));
        Assert.All(log, e => Assert.Equal(ResolveOutcome.Installed, e.Outcome));
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Missing_faults_are_served_by_a_reader_once_per_page_and_the_guest_sees_the_copied_bytes(int vcpus)
    {
        const ulong seed = 0xA5A5_0000_0000_0001;
        using var m = GuestMachine.Create(new MachineConfig(vcpus, (ulong)vcpus * MiB));
        using var uffd = Userfaultfd.Open(UffdFeatures.None);
        var ioctls = uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
        Assert.NotEqual(0UL, ioctls & (1UL << 3));   // _UFFDIO_COPY is offered on the range

        using (var reader = new UffdReader(uffd, f =>
        {
            var gpa = Pattern.GpaOf(m, f.Address);
            return CopyPage(uffd, new HostAddress(f.Address), Pattern.Page(gpa, seed));
        }))
        {
            var verified = RunServed(m, reader, Workload.Verify, i => m.ArgsFor(i, seed, qwordsPerPage: 512), PrivilegeLevel.User);
            Assert.All(verified.Vcpus, v => Assert.Equal(0UL, v.Result));       // no mismatching qword anywhere
            AssertEachPageResolvedOnce(m, reader);
            Assert.All(reader.Log, e => Assert.False(e.Fault.IsMinor || e.Fault.IsWp));
        }
        Assert.Equal(0, Pattern.HostMismatches(m, seed));
    }

    [KvmTheory]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(1, true)]    // page cache allocated and written through a second, populated mapping (post-copy's way)
    [InlineData(2, true)]
    public void Minor_faults_on_shmem_are_served_with_continue_from_the_page_cache(int vcpus, bool backingView)
    {
        const ulong seed = 0x0BAD_CAFE_0000_0000, seed2 = 0x1111;
        using var m = GuestMachine.Create(new MachineConfig(vcpus, (ulong)vcpus * MiB, Backing.Shmem));
        if (backingView) m.Ram.MapBackingView();
        var cache = new byte[m.Ram.Size];
        Pattern.Fill(cache, m.Ram.Base, seed);
        m.Ram.WriteBacking(0, cache);                  // page cache filled apart from the mapping: faults stay minor
        using var uffd = Userfaultfd.Open(UffdFeatures.MinorShmem);
        var ioctls = uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Minor);
        Assert.NotEqual(0UL, ioctls & (1UL << 7));   // _UFFDIO_CONTINUE is offered on the range

        using (var reader = new UffdReader(uffd, f => uffd.Continue(new HostAddress(f.Address), PageSize)))
        {
            var verified = RunServed(m, reader, Workload.Verify, i => m.ArgsFor(i, seed, qwordsPerPage: 512), PrivilegeLevel.User);
            Assert.All(verified.Vcpus, v => Assert.Equal(0UL, v.Result));
            AssertEachPageResolvedOnce(m, reader);
            Assert.All(reader.Log, e => Assert.True(e.Fault.IsMinor));

            // every page is mapped now: CONTINUE again is EEXIST, and guest writes reach the page cache without faults
            Assert.Equal(ResolveOutcome.AlreadyPresent, uffd.Continue(m.Ram.Host, PageSize));
            RunServed(m, reader, Workload.Write, i => m.ArgsFor(i, seed2, qwordsPerPage: 512), PrivilegeLevel.User);
            Assert.Equal((int)m.Ram.PageCount, reader.Log.Count);
        }
        m.Ram.ReadBacking(0, cache);
        var expected = new byte[m.Ram.Size];
        Pattern.Fill(expected, m.Ram.Base, seed2);
        Assert.True(expected.AsSpan().SequenceEqual(cache), "the memfd's page cache does not hold the guest's writes");
    }

    [KvmFact]
    public void Zeropage_installs_zeros_and_copy_or_zeropage_onto_an_installed_page_is_already_present()
    {
        const ulong seed = 0x4242, seed2 = 0x7777;
        const int pages = 64;
        using var m = GuestMachine.Create(new MachineConfig(1, pages * PageSize));
        using var uffd = Userfaultfd.Open(UffdFeatures.None);
        uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
        using (var reader = new UffdReader(uffd, f =>
        {
            var gpa = Pattern.GpaOf(m, f.Address);
            return Pattern.PageIndex(m, gpa) % 2 == 0
                ? CopyPage(uffd, new HostAddress(f.Address), Pattern.Page(gpa, seed))
                : uffd.ZeroPage(new HostAddress(f.Address), PageSize);
        }))
        {
            // Read sums every qword it reads: only the even (copied) pages contribute
            var read = RunServed(m, reader, Workload.Read, i => m.ArgsFor(i, qwordsPerPage: 512), PrivilegeLevel.User);
            ulong expected = 0;
            for (var p = 0; p < pages; p += 2)
                for (ulong q = 0; q < 512; q++) expected += m.Ram.Base.Value + (ulong)p * PageSize + q * 8 + seed;
            Assert.Equal(expected, read.Vcpus[0].Result);
            AssertEachPageResolvedOnce(m, reader);

            // EEXIST is an outcome: nothing is overwritten, neither the copied page nor the zero page
            var copied = m.Ram.Base;
            var zeroed = m.Ram.Base + PageSize;
            Assert.Equal(ResolveOutcome.AlreadyPresent, CopyPage(uffd, m.Ram.HostOf(copied), Pattern.Page(copied, 0xDEAD)));
            Assert.Equal(ResolveOutcome.AlreadyPresent, CopyPage(uffd, m.Ram.HostOf(zeroed), Pattern.Page(zeroed, 0xDEAD)));
            Assert.Equal(ResolveOutcome.AlreadyPresent, uffd.ZeroPage(m.Ram.HostOf(copied), PageSize));
            Assert.Equal(copied.Value + seed, m.Ram.Qword(copied));
            Assert.Equal(0UL, m.Ram.Qword(zeroed + 8));

            // writing over the zero pages is copy-on-write, not a missing fault: the reader sees nothing more
            var written = RunServed(m, reader, Workload.Write, i => m.ArgsFor(i, seed2, qwordsPerPage: 512), PrivilegeLevel.User);
            Assert.Equal((ulong)pages, written.Vcpus[0].Result);
            Assert.Equal(pages, reader.Log.Count);
        }
        Assert.Equal(0, Pattern.HostMismatches(m, seed2));
    }

    [KvmFact]
    public void A_multi_page_copy_or_continue_stops_at_an_existing_page_and_reports_the_bytes_it_installed()
    {
        const int pages = 8;
        var src = new byte[pages * (int)PageSize];
        for (var i = 0; i < src.Length; i += 8) BitConverter.TryWriteBytes(src.AsSpan(i), 0x1234_0000_0000UL + (ulong)i);
        foreach (var backing in new[] { Backing.Anonymous, Backing.Shmem })
        {
            using var ram = GuestRegion.Create(new GuestAddress(0x100000), pages * PageSize, backing);
            var shmem = backing == Backing.Shmem;
            using var uffd = Userfaultfd.Open(shmem ? UffdFeatures.MinorShmem : UffdFeatures.None);
            uffd.Register(ram.Host, ram.Size, shmem ? UffdRegisterMode.Minor : UffdRegisterMode.Missing);
            if (shmem) ram.WriteBacking(0, src);    // the page cache holds the bytes; CONTINUE maps them
            ResolveOutcome Install(int first, int count, out long done)
            {
                var dst = ram.Host.Add((ulong)first * PageSize);
                // SAFETY: src is pinned for the call and holds every page of the range
                fixed (byte* p = src)
                    return shmem ? uffd.Continue(dst, (ulong)count * PageSize, out done) : uffd.Copy(dst, p + first * (int)PageSize, (ulong)count * PageSize, out done);
            }

            Assert.Equal(ResolveOutcome.Installed, Install(3, 1, out var one));
            Assert.Equal((long)PageSize, one);
            // [0, 8) with page 3 present: pages 0..2 go in, the kernel stops there and says how far it got
            Assert.Equal(ResolveOutcome.Retry, Install(0, pages, out var part));
            Assert.Equal(3 * (long)PageSize, part);
            // the rest starts at the existing page: nothing is installed, EEXIST
            Assert.Equal(ResolveOutcome.AlreadyPresent, Install(3, pages - 3, out var none));
            Assert.True(none <= 0, $"{backing}: {none} bytes reported for a range starting at an existing page");
            Assert.Equal(ResolveOutcome.Installed, Install(4, pages - 4, out var rest));
            Assert.Equal((pages - 4) * (long)PageSize, rest);
            Assert.True(ram.Span(ram.Base, src.Length).SequenceEqual(src), $"{backing}: guest RAM differs from the copied bytes");
        }
    }

    private static string Wchan(int tid) => File.ReadAllText($"/proc/self/task/{tid}/wchan").Trim();

    [KvmFact]
    public void A_vcpu_blocked_on_a_fault_stays_blocked_after_dontwake_and_eexist_until_wake()
    {
        const ulong seedPage = 0x1000_0000, seedWrite = 0x2000_0000;
        using var m = GuestMachine.Create(new MachineConfig(1, PageSize));
        var page = m.Ram.Base;
        var vcpu = m.Vcpus[0];
        using var uffd = Userfaultfd.Open(UffdFeatures.None);
        uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);

        string waitingIn = "", stillWaitingIn = "";
        var finishedBeforeWake = true;
        var outcomes = new List<ResolveOutcome>();
        using var finished = new ManualResetEventSlim();
        using var reader = new UffdReader(uffd, f =>
        {
            // the fault's message is queued just before the vCPU thread sleeps: wait until it does
            var sw = Stopwatch.StartNew();
            while ((waitingIn = Wchan(vcpu.ThreadId)) != "handle_userfault" && sw.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(1);
            var first = DontWakeCopy(uffd, new HostAddress(f.Address), page, seedPage, out var again);
            outcomes.Add(first);
            outcomes.Add(again);
            Thread.Sleep(100);                      // ample time for a wrongly woken vCPU to finish its few instructions
            finishedBeforeWake = finished.IsSet;
            stillWaitingIn = Wchan(vcpu.ThreadId);
            uffd.Wake(new HostAddress(f.Address), PageSize);
            return first;
        });
        var run = RunServed(m, reader, Workload.TouchOnce, _ => new WorkloadArgs(page.Value, page.Value + PageSize, seedWrite), PrivilegeLevel.User);
        finished.Set();

        Assert.Equal("handle_userfault", waitingIn);
        Assert.Equal([ResolveOutcome.Installed, ResolveOutcome.AlreadyPresent], outcomes);
        Assert.False(finishedBeforeWake);
        Assert.Equal("handle_userfault", stillWaitingIn);
        Assert.Single(reader.Log);
        Assert.Equal(page.Value + seedPage, run.Vcpus[0].Result);        // the guest read the DONTWAKE-copied bytes
        Assert.Equal(page.Value + seedWrite, m.Ram.Qword(page));         // and then wrote its own
    }

    /// <summary>This host's KVM module: kvm_pvm reports CPL3 missing pages as a bare -EFAULT (HOST.md).</summary>
    private static bool HostIsKvmPvm => Directory.Exists("/sys/module/kvm_pvm");

    [KvmFact]
    public void Sigbus_read_fault_at_cpl0_is_an_emulated_mmio_exit_completed_by_the_vmm()
    {
        const ulong seedPage = 0x3000, seedWrite = 0x4000;
        using var m = GuestMachine.Create(new MachineConfig(1, 16 * PageSize));
        var vcpu = m.Vcpus[0];
        var page = m.Ram.Base + 5 * PageSize;
        var target = page + 0x238;                       // not the page's first qword: the exit names the exact GPA
        using var uffd = Userfaultfd.Open(UffdFeatures.Sigbus);
        uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
        m.Image.Boot(vcpu, Workload.TouchOnce, new WorkloadArgs(target.Value, page.Value + PageSize, seedWrite), PrivilegeLevel.Kernel);
        vcpu.BindToCurrentThread();
        try
        {
            var exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.MemoryFault, exit.Kind);
            Assert.Equal(MemoryFaultForm.EmulatedMmio, exit.Form);
            Assert.Equal(KvmConst.KVM_EXIT_MMIO, exit.RawReason);
            Assert.True(exit.HasAddress);
            Assert.Equal(target, exit.Address);
            Assert.Equal(8u, exit.Size);
            Assert.False(exit.IsWrite);
            Assert.Same(m.RamSlot.Region, m.Vm.SlotOf(exit.Address)!.Region);

            // the vCPU thread installs the page itself, then completes the emulated read from the page's bytes
            var bytes = Pattern.Page(page, seedPage);
            Assert.Equal(ResolveOutcome.Installed, CopyPage(uffd, m.Ram.HostOf(page), bytes));
            vcpu.CompleteMmioRead(bytes.AsSpan((int)(exit.Address.Value - page.Value), (int)exit.Size));

            exit = vcpu.Run();
            Assert.True(GuestCall.TryDecode(exit, out var call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Report, target.Value + seedPage), call);
            exit = vcpu.Run();                               // the write goes to the now-present page: no exit for it
            Assert.True(GuestCall.TryDecode(exit, out call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Done, target.Value + seedPage), call);
        }
        finally
        {
            vcpu.UnbindThread();
        }
        Assert.Equal(target.Value + seedWrite, m.Ram.Qword(target));
        Assert.Equal(page.Value + seedPage, m.Ram.Qword(page));
    }

    [KvmFact]
    public void Sigbus_write_fault_at_cpl0_exits_after_the_store_and_the_vmm_applies_its_data()
    {
        const ulong seed = 0x5150;
        const int pages = 3;
        using var m = GuestMachine.Create(new MachineConfig(1, pages * PageSize));
        var vcpu = m.Vcpus[0];
        using var uffd = Userfaultfd.Open(UffdFeatures.Sigbus);
        uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
        m.Image.Boot(vcpu, Workload.Write, m.ArgsFor(0, seed), PrivilegeLevel.Kernel);   // one qword per page: [a] = a + seed
        var zero = new byte[PageSize];
        var faults = new List<GuestAddress>();
        vcpu.BindToCurrentThread();
        try
        {
            while (true)
            {
                var exit = vcpu.Run();
                if (GuestCall.TryDecode(exit, out var call))
                {
                    Assert.Equal(new GuestCall(GuestOp.Done, pages), call);
                    break;
                }
                Assert.Equal(VcpuExitKind.MemoryFault, exit.Kind);
                Assert.Equal(MemoryFaultForm.EmulatedMmio, exit.Form);
                Assert.True(exit.IsWrite);
                Assert.Equal(8u, exit.Size);
                Assert.Equal(exit.Address.Value + seed, exit.Data);   // the store's data arrives with the exit
                faults.Add(exit.Address);
                // the store has retired (HOST.md): install the page, then apply the data to it ourselves
                Assert.Equal(ResolveOutcome.Installed, CopyPage(uffd, m.Ram.HostOf(exit.Address.PageAligned), zero));
                m.Ram.Qword(exit.Address) = exit.Data;
                Assert.True(faults.Count <= pages, "more faults than pages");
            }
        }
        finally
        {
            vcpu.UnbindThread();
        }
        Assert.Equal(Enumerable.Range(0, pages).Select(p => m.Ram.Base + (ulong)p * PageSize), faults);
        for (var p = 0; p < pages; p++)
        {
            var gpa = m.Ram.Base + (ulong)p * PageSize;
            Assert.Equal(gpa.Value + seed, m.Ram.Qword(gpa));
        }
    }

    [KvmFact]
    public void Sigbus_fault_at_cpl3_exits_with_nothing_committed_and_a_rerun_after_copy_completes()
    {
        const ulong seedPage = 0x6000, seedWrite = 0x7000;
        using var m = GuestMachine.Create(new MachineConfig(1, 16 * PageSize));
        var vcpu = m.Vcpus[0];
        var page = m.Ram.Base + 9 * PageSize;
        var target = page + 0x10;
        using var uffd = Userfaultfd.Open(UffdFeatures.Sigbus);
        uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
        m.Image.Boot(vcpu, Workload.TouchOnce, new WorkloadArgs(target.Value, page.Value + PageSize, seedWrite), PrivilegeLevel.User);
        vcpu.BindToCurrentThread();
        try
        {
            var exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.MemoryFault, exit.Kind);
            if (HostIsKvmPvm || exit.Form == MemoryFaultForm.BareEfault)
            {
                // kvm_pvm: KVM_RUN = -1/EFAULT, exit_reason 0, no GPA anywhere
                Assert.Equal(MemoryFaultForm.BareEfault, exit.Form);
                Assert.False(exit.HasAddress);
                Assert.Equal(KvmConst.KVM_EXIT_UNKNOWN, exit.RawReason);
            }
            else
            {
                // upstream with the memory-fault exit filled in: the GPA's page
                Assert.Equal(MemoryFaultForm.MemoryFaultExit, exit.Form);
                Assert.Equal(KvmConst.KVM_EXIT_MEMORY_FAULT, exit.RawReason);
                Assert.Equal(page, exit.Address.PageAligned);
            }
            // RIP is still at the faulting read (TouchOnce's first instruction) and RDI holds the address
            var regs = vcpu.CurrentRegs();
            Assert.Equal(m.Image.EntryOf(Workload.TouchOnce), regs.Rip);
            Assert.Equal(target.Value, regs.Rdi);
            Assert.Equal(regs.Rip, vcpu.GetRegs().Rip);

            Assert.Equal(ResolveOutcome.Installed, CopyPage(uffd, m.Ram.HostOf(page), Pattern.Page(page, seedPage)));
            exit = vcpu.Run();                               // the access is simply retried
            Assert.True(GuestCall.TryDecode(exit, out var call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Report, target.Value + seedPage), call);
            exit = vcpu.Run();
            Assert.True(GuestCall.TryDecode(exit, out call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Done, target.Value + seedPage), call);
        }
        finally
        {
            vcpu.UnbindThread();
        }
        Assert.Equal(target.Value + seedWrite, m.Ram.Qword(target));
    }

    private static ResolveOutcome DontWakeCopy(Userfaultfd uffd, HostAddress dst, GuestAddress gpa, ulong seed, out ResolveOutcome again)
    {
        var bytes = Pattern.Page(gpa, seed);
        ResolveOutcome first;
        // SAFETY: bytes is pinned for both calls; each reads one page.
        fixed (byte* p = bytes)
        {
            first = uffd.Copy(dst, p, PageSize, dontWake: true);
            again = uffd.Copy(dst, p, PageSize);        // EEXIST: this one wakes nobody either
        }
        return first;
    }
}
