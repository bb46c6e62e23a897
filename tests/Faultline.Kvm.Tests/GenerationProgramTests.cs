using System.Diagnostics;
using Faultline.Guest;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.TestKit;

namespace Faultline.Kvm.Tests;

/// <summary>
/// The generation program: passes in guest code, state in registers. Corruption between passes is found by the next
/// pass; a vCPU paused at a random exit and resumed on a second VM from its registers and a copy of the RAM finishes
/// with no mismatch, and with one when the copy is corrupted.
/// </summary>
public sealed class GenerationProgramTests
{
    private const int Pages = 1024;          // 4 MiB: a pass takes long enough that a timer lands inside it
    private const int Qwords = 512;

    public enum Corruption { None, OtherAddress, Zero, Torn }

    [KvmTheory]
    [InlineData(AccessOrder.Sequential, Corruption.None)]
    [InlineData(AccessOrder.Sequential, Corruption.OtherAddress)]
    [InlineData(AccessOrder.Sequential, Corruption.Zero)]
    [InlineData(AccessOrder.Sequential, Corruption.Torn)]
    [InlineData(AccessOrder.Random, Corruption.None)]
    [InlineData(AccessOrder.Random, Corruption.OtherAddress)]
    [InlineData(AccessOrder.Random, Corruption.Torn)]
    [InlineData(AccessOrder.Hotset, Corruption.None)]
    [InlineData(AccessOrder.Hotset, Corruption.OtherAddress)]
    [InlineData(AccessOrder.Hotset, Corruption.Zero)]
    [InlineData(AccessOrder.Hotset, Corruption.Torn)]
    public void A_page_corrupted_between_passes_is_found_by_the_next_pass(AccessOrder order, Corruption corruption)
    {
        using var m = GuestMachine.Create(new MachineConfig(1, Pages * 4096UL));
        var args = m.ArgsFor(0, qwordsPerPage: Qwords, order: order);
        m.Image.Boot(m.Vcpus[0], Workload.Generations, args, PrivilegeLevel.User);
        var at = Drive(m.Vcpus[0], r => r.Pass == 2);
        Assert.Equal([0UL, 0UL, 0UL], at.Reports.Select(r => r.Mismatches));
        Assert.Equal([0UL, 1UL, 2UL], at.Reports.Select(r => r.Pass));
        HostCheck(m, at.Regs, order, pass: 2);

        // the first page the next pass visits (host twin from the registers at the report)
        var victim = GenerationProgram.NextPassPages(at.Regs, order).First();
        var page = m.Ram.Base + victim * 4096;
        var expected = Corrupt(m.Ram, page, corruption);

        var next = Drive(m.Vcpus[0], r => r.Pass == 3);
        var found = next.Reports[^1].Mismatches;
        if (corruption == Corruption.None) Assert.Equal(0UL, found);
        else if (order == AccessOrder.Hotset) Assert.True(found >= 1, $"{corruption}: {found} mismatches");
        else Assert.Equal(expected, found);
    }

    [KvmTheory]
    [InlineData(AccessOrder.Sequential, false)]
    [InlineData(AccessOrder.Sequential, true)]
    [InlineData(AccessOrder.Random, false)]
    [InlineData(AccessOrder.Random, true)]
    [InlineData(AccessOrder.Hotset, false)]
    [InlineData(AccessOrder.Hotset, true)]
    public void Paused_at_a_random_exit_and_resumed_on_a_second_vm_it_finishes_and_verifies(AccessOrder order, bool corruptCopy)
    {
        var rng = new Random(Environment.TickCount);
        for (var round = 0; round < 3; round++)
        {
            var delay = TimeSpan.FromMicroseconds(rng.Next(20, 1500));
            using var a = GuestMachine.Create(new MachineConfig(1, Pages * 4096UL));
            a.Image.Boot(a.Vcpus[0], Workload.Generations, a.ArgsFor(0, qwordsPerPage: Qwords, order: order), PrivilegeLevel.User);
            var paused = Drive(a.Vcpus[0], r => false, kickAfterPass: 2, kickDelay: delay);
            Assert.False(paused.AtReport);
            Assert.True(paused.Regs.Rbp >= 2, $"paused in pass {paused.Regs.Rbp}");

            using var b = GuestMachine.Create(new MachineConfig(1, Pages * 4096UL));
            a.Ram.Span(a.Ram.Base, (int)a.Ram.Size).CopyTo(b.Ram.Span(b.Ram.Base, (int)b.Ram.Size));
            if (corruptCopy) CorruptAhead(b.Ram, paused.Regs, order);
            var vb = b.Vcpus[0];
            vb.SetSregs(paused.Sregs);
            vb.SetRegs(paused.Regs);
            vb.SetEvents(paused.Events);

            var check = new GenerationCheck(paused.Regs);
            var done = Drive(vb, r => check.Observe(r.Encode()));
            Assert.True(check.IsComplete);
            Assert.True(done.Reports[^1].Pass == check.PausedPass + 1, $"completed at pass {done.Reports[^1].Pass}, paused in {check.PausedPass}");
            var why = $"round {round}, paused in pass {check.PausedPass} at rip 0x{paused.Regs.Rip:x} after {delay.TotalMicroseconds} µs";
            if (corruptCopy) Assert.True(check.Mismatches >= 1, $"{why}: the corrupted copy verified clean");
            else
            {
                Assert.True(check.Mismatches == 0, $"{why}: {check.Mismatches} mismatches");
                HostCheck(b, done.Regs, order, done.Reports[^1].Pass);
            }
        }
    }

    [KvmFact]
    public void Paused_at_a_report_and_resumed_elsewhere_it_does_not_lose_the_pass()
    {
        using var a = GuestMachine.Create(new MachineConfig(1, Pages * 4096UL));
        a.Image.Boot(a.Vcpus[0], Workload.Generations, a.ArgsFor(0, qwordsPerPage: Qwords, order: AccessOrder.Random), PrivilegeLevel.User);
        var paused = Drive(a.Vcpus[0], r => r.Pass == 1);
        using var b = GuestMachine.Create(new MachineConfig(1, Pages * 4096UL));
        a.Ram.Span(a.Ram.Base, (int)a.Ram.Size).CopyTo(b.Ram.Span(b.Ram.Base, (int)b.Ram.Size));
        b.Vcpus[0].SetSregs(paused.Sregs);
        b.Vcpus[0].SetRegs(paused.Regs);
        b.Vcpus[0].SetEvents(paused.Events);
        var check = new GenerationCheck(paused.Regs);
        var done = Drive(b.Vcpus[0], r => check.Observe(r.Encode()));
        Assert.Equal(0UL, check.Mismatches);
        Assert.True(done.Reports[^1].Pass >= 2);
        HostCheck(b, done.Regs, AccessOrder.Random, done.Reports[^1].Pass);
    }

    [Fact]
    public void Reports_and_seeds_round_trip()
    {
        var r = new GenerationReport(77, 12345);
        Assert.Equal(r, GenerationReport.Decode(r.Encode()));
        Assert.Equal(GenerationReport.MismatchMask, GenerationReport.Decode(new GenerationReport(1, ulong.MaxValue).Encode()).Mismatches);
        Assert.Equal(5UL, GenerationProgram.GenerationOf(0x40_1000, GenerationProgram.ValueAt(0x40_1000, 5)));
        Assert.Null(GenerationProgram.GenerationOf(0x40_1000, GenerationProgram.ValueAt(0x40_2000, 5)));
        Assert.Null(GenerationProgram.GenerationOf(0x40_1000, 0));
    }

    private sealed record Stopped(KvmRegs Regs, KvmSregs Sregs, KvmVcpuEvents Events, List<GenerationReport> Reports, bool AtReport);

    /// <summary>
    /// Runs the vCPU on its own thread until a report satisfies <paramref name="stopAt"/> (stopped at that exit), or,
    /// with <paramref name="kickAfterPass"/>, until a self-kick timer armed at that pass's report ends a KVM_RUN.
    /// </summary>
    private static Stopped Drive(Vcpu vcpu, Func<GenerationReport, bool> stopAt, ulong? kickAfterPass = null, TimeSpan kickDelay = default)
    {
        Stopped? result = null;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                vcpu.BindToCurrentThread();
                using var timer = SelfKickTimer.CreateForCurrentThread(vcpu);
                var reports = new List<GenerationReport>();
                var sw = Stopwatch.StartNew();
                while (sw.Elapsed < TimeSpan.FromSeconds(60))
                {
                    var exit = vcpu.Run();
                    if (GuestCall.TryDecode(exit, out var call))
                    {
                        if (call.Op != GuestOp.Report) throw new GuestException($"unexpected guest call {call.Op}({call.Value:x})");
                        var r = GenerationReport.Decode(call.Value);
                        reports.Add(r);
                        if (stopAt(r)) { result = Capture(vcpu, reports, atReport: true); return; }
                        if (kickAfterPass == r.Pass) timer.Arm(kickDelay);
                        continue;
                    }
                    if (exit.Kind == VcpuExitKind.Interrupted)
                    {
                        if (timer.IsArmed) { timer.Disarm(); result = Capture(vcpu, reports, atReport: false); return; }
                        continue;
                    }
                    throw GuestMachine.Unexpected(vcpu, exit);
                }
                throw new GuestException("the generation program did not get there within 60 s");
            }
            catch (Exception e) { error = e; }
            finally { vcpu.UnbindThread(); }
        }) { Name = "fl-vcpu-gen", IsBackground = true };
        t.Start();
        Assert.True(t.Join(TimeSpan.FromSeconds(90)), "vCPU thread hung");
        if (error is not null) throw new Xunit.Sdk.XunitException($"vCPU thread failed: {error}");
        return result!;
    }

    private static Stopped Capture(Vcpu vcpu, List<GenerationReport> reports, bool atReport) =>
        new(vcpu.GetRegs(), vcpu.GetSregs(), vcpu.GetEvents(), reports, atReport);

    /// <summary>Stopped at the report of <paramref name="pass"/>: every page holds that generation (hotset: one generation ≤ it per page).</summary>
    private static void HostCheck(GuestMachine m, in KvmRegs regs, AccessOrder order, ulong pass)
    {
        long wrong = 0;
        for (var page = m.Ram.Base.Value; page < m.Ram.End.Value; page += 4096)
        {
            var first = GenerationProgram.GenerationOf(page, m.Ram.Qword(new GuestAddress(page)));
            if (first is null || first > pass || (order != AccessOrder.Hotset && first != pass)) { wrong++; continue; }
            for (ulong q = 1; q < Qwords; q++)
                if (GenerationProgram.GenerationOf(page + q * 8, m.Ram.Qword(new GuestAddress(page + q * 8))) != first) wrong++;
        }
        Assert.Equal(0, wrong);
        Assert.Equal(pass, GenerationProgram.PassOf(regs));
    }

    /// <summary>Corrupts one page; returns the qword mismatches an exact check finds in it.</summary>
    private static ulong Corrupt(GuestRegion ram, GuestAddress page, Corruption how)
    {
        var span = ram.Span(page, 4096);
        switch (how)
        {
            case Corruption.OtherAddress:
                var other = page.Value + 4096 < ram.End.Value ? page + 4096 : ram.Base;
                ram.Span(other, 4096).CopyTo(span);
                return Qwords;
            case Corruption.Zero:
                span.Clear();
                return Qwords;
            case Corruption.Torn:
                // the second half from another generation than the first half's
                var g = GenerationProgram.GenerationOf(page.Value, ram.Qword(page))!.Value;
                var older = g == 0 ? 1 : g - 1;
                for (ulong q = Qwords / 2; q < Qwords; q++) ram.Qword(page + q * 8) = GenerationProgram.ValueAt(page.Value + q * 8, older);
                return Qwords / 2;
            default:
                return 0;
        }
    }

    /// <summary>
    /// Corrupts (zeroes) pages a resumed vCPU reads before it completes its check. Sequential and random: any page is
    /// read, by the rest of the interrupted pass or by the next one; the one under way is skipped. Hotset: the hot set
    /// and the pages it drifts into next, which the next full pass reads many times over.
    /// </summary>
    private static void CorruptAhead(GuestRegion ram, in KvmRegs paused, AccessOrder order)
    {
        var pages = paused.Rbx;
        var current = (paused.R15 - ram.Base.Value) >> 12;   // the page under way, if R15 points into the range
        var chosen = new List<ulong>();
        if (order == AccessOrder.Hotset)
            for (ulong i = 0; i < 2 * Hotset.HotPages(pages); i++) chosen.Add((paused.R12 + i) % pages);
        else chosen.Add((current + pages / 2) % pages);
        foreach (var p in chosen)
            if (p != current && p != ((paused.R10 - ram.Base.Value) >> 12)) ram.Span(ram.Base + p * 4096, 4096).Clear();
    }
}
