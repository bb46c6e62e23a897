using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;

namespace Faultline.Paging.Tests;

/// <summary>
/// The arm64 async-PF protocol end to end on a real VM: the task kernel's arm variant enables it through SMCCC calls;
/// every fault becomes the SDEI event (reason 1 + token in the control block, handler, COMPLETE_AND_RESUME into the
/// park) and later the PPI (reason 2 + token, IRQ_ACK), one "page ready" at a time; no task reads a page before it.
/// </summary>
public sealed class ArmAsyncPfTests
{
    private static ApfRunSpec Spec(NotifyProtocol p = NotifyProtocol.Arm, int vcpus = 1, int memTasks = 1, int pages = 32, double latencyUs = 2000) =>
        new(vcpus, memTasks, TimeSpan.FromMicroseconds(latencyUs), p, AsyncPfMode.Always, pages, CpuIterations: 200_000_000);

    // the token round trip, the CPU task running meanwhile, a guest that never enables it and interrupts off: AsyncPfTests' theories

    [KvmFact]
    public void Every_not_present_is_one_sdei_handler_ended_by_complete_and_resume()
    {
        var r = ApfRun.Execute(Spec());
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(32, r.Async!.NotPresent);
        var (dispatched, completed, resumed, calls) = r.Sdei[0];
        Assert.Equal(32, dispatched);
        Assert.Equal(32, resumed);
        Assert.Equal(0, completed);
        Assert.True(calls >= 32 + 32 + 7, $"{calls} conduit calls");   // COMPLETE_AND_RESUME + IRQ_ACK per fault, and the boot's
        Assert.Equal(TaskLayout.ApfArea(0) | ArmPvAsyncPf.Enabled, r.ArmState[0].Control);   // what the guest ENABLEd
        // the vCPU thread allocates nothing per fault (a sync run allocates the same ~136 bytes of setup): one object per
        // fault, 24 bytes at least, would show
        Assert.True(r.Paging.FaultPathAllocatedBytes < 32 * 24, $"{r.Paging.FaultPathAllocatedBytes} bytes allocated on the vCPU thread");
    }

    [KvmFact]
    public void Irq_ack_releases_the_next_ready_one_at_a_time_with_four_tasks_on_two_vcpus()
    {
        var r = ApfRun.Execute(Spec(vcpus: 2, memTasks: 4, pages: 48));
        Assert.Equal(0, r.Mismatches);
        Assert.Equal(96, r.Async!.NotPresent);
        Assert.Equal(96, r.GuestReady);
        Assert.Equal(0, r.GuestSpurious);
        foreach (var v in r.History.GroupBy(h => h.Vcpu))
        {
            var byPost = v.OrderBy(h => h.ReadyPosted).ToList();
            // the next "page ready" is posted only after the guest's IRQ_ACK of the previous one
            Assert.All(byPost.Zip(byPost.Skip(1)), p => Assert.True(p.First.Acked <= p.Second.ReadyPosted));
            var byAccept = v.OrderBy(h => h.Accepted).ToList();
            Assert.Contains(byAccept.Zip(byAccept.Skip(1)), p => p.Second.Accepted < p.First.Present);   // fetches overlapped
        }
    }

    [KvmFact]
    public void The_vmm_control_path_round_trips_what_the_guest_configured()
    {
        var r = ApfRun.Execute(Spec(pages: 12));
        var state = r.ArmState[0];
        Assert.Equal(ArmPvAsyncPf.DefaultAsyncPfEvent, state.Event);
        Assert.Equal(ArmPvAsyncPf.DefaultReadyVector, state.Irq);
        Assert.False(state.Sdei.Masked);
        var apf = state.Sdei.Events.Single(e => e.Number == state.Event);
        Assert.True(apf.Registered && apf.Enabled && !apf.Pending);
        Assert.Equal(TaskLayout.VcpuBlock(0), apf.Arg);                 // what the guest's EVENT_REGISTER passed
        Assert.NotEqual(0UL, apf.Entry);

        // a second VM, as a migration's destination: SET_* what GET_* read, and read it back
        var kernel = new TaskKernel(ArmPvAsyncPf.DefaultReadyVector, TaskProtocol.Arm);
        using var m = GuestMachine.Create(new MachineConfig(1, 12 * 4096) { Kernel = kernel.Kernel });
        using var engine = (PagingEngine)EngineFactory.Create(new PagingOptions(PagingMode.Exits, Backing.Anonymous)
        {
            AsyncPf = new AsyncPfOptions(AsyncPfMode.Always) { Protocol = AsyncPfProtocol.Arm },
        });
        var source = new PatternPageSource(1);
        engine.Start(m, source);
        var host = Assert.IsType<ArmAsyncPf>(engine.AsyncPf);
        Assert.Equal(0UL, host.GetControl(0));
        Assert.True(host.Sdei.EventsOf(0).Masked);
        host.RestoreVcpu(0, state);
        var back = host.CaptureVcpu(0);
        Assert.Equal((state.Event, state.Irq, state.Control, state.Sdei.Masked), (back.Event, back.Irq, back.Control, back.Sdei.Masked));
        Assert.Equal(state.Sdei.Events, back.Sdei.Events);

        Assert.Equal(ArmPvAsyncPf.Version, ArmAsyncPf.GetVersion());
        Assert.Throws<InvalidOperationException>(() => host.SetSdei(0, 0x40000002));   // the guest registered the current one
        host.SetIrq(0, 0xE0);
        Assert.Equal(0xE0, host.GetIrq(0));
        Assert.Throws<UsageException>(() => host.SetIrq(0, 3));
        Assert.Throws<UsageException>(() => host.SetControl(0, TaskLayout.ApfArea(0) | 0x4));
        host.SetControl(0, 0);
        Assert.Equal(0UL, host.GetControl(0));
    }
}
