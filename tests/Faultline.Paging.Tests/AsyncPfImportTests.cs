using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Memory;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.Engines;
using Faultline.Paging.Sources;
using Faultline.TestKit;

namespace Faultline.Paging.Tests;

/// <summary>
/// Outstanding async page faults carried from one VM to another (what a migration or a snapshot does with a guest
/// paused while pages were on their way): four memory tasks parked on four tokens whose pages never come on the first
/// VM; the registration and the four faults are exported, imported on a second VM with the task kernel's state and the
/// registers, and there each parked task gets its "page ready" with the same token and finishes checking its pages.
/// </summary>
public sealed class AsyncPfImportTests
{
    private const ulong Seed = 0x5eed;

    [KvmTheory]
    [InlineData(AsyncPfProtocol.X86)]
    [InlineData(AsyncPfProtocol.Arm)]   // with the SDEI registration: the second VM's guest never registers again
    public void Parked_tasks_are_woken_on_a_second_vm_with_the_tokens_they_parked_on(AsyncPfProtocol protocol)
    {
        const int pages = 64;
        var arm = protocol == AsyncPfProtocol.Arm;
        var apfOptions = new AsyncPfOptions(AsyncPfMode.Always) { Protocol = protocol };
        var kernel = arm ? new TaskKernel(apfOptions.ArmReadyVector, TaskProtocol.Arm) : new TaskKernel();
        var config = new MachineConfig(1, pages * GuestAddress.PageSize, Backing.Anonymous) { Kernel = kernel.Kernel };
        var tasks = new TaskConfig(4, 1UL << 40, AsyncPf: true, Seed);   // a CPU task that would never end

        using var first = GuestMachine.Create(config);
        using var slow = new DelayedPageSource(new PatternPageSource(Seed), TimeSpan.FromSeconds(60));
        using var firstEngine = (PagingEngine)EngineFactory.Create(new PagingOptions(PagingMode.Exits, Backing.Anonymous) { AsyncPf = apfOptions });
        firstEngine.Start(first, slow);
        var program = new TaskProgram(first, kernel, tasks);
        program.Boot();
        var host = firstEngine.AsyncPf!;
        using (var stop = new CancellationTokenSource())
        {
            var watcher = new Thread(() =>
            {
                var until = DateTime.UtcNow.AddSeconds(30);
                while (host.OutstandingOn(0) < 4 && DateTime.UtcNow < until) Thread.Sleep(5);
                Thread.Sleep(50);
                stop.Cancel();
            }) { IsBackground = true };
            watcher.Start();
            first.RunBooted(firstEngine, TimeSpan.FromSeconds(60), stop.Token);
            watcher.Join();
        }
        var exported = host.Export(0);
        var sdei = (host as Faultline.Paging.AsyncPf.Arm.ArmAsyncPf)?.ExportSdei(0);
        Assert.Equal(4, exported.Outstanding.Count);
        Assert.All(exported.Outstanding, f => Assert.Equal(AsyncPfStage.Waiting, f.Stage));
        Assert.Equal(4, exported.Outstanding.Select(f => f.Token).Distinct().Count());
        Assert.True((exported.EnableMsr & 1) != 0);   // ENABLED, bit 0 of both protocols' enable word
        var parked = program.Read()[0].Tasks.Where(t => t.State == "parked").Select(t => t.Token).Order().ToList();
        Assert.Equal(exported.Outstanding.Select(f => f.Token).Order(), parked);
        var state = program.Capture(0);
        var v = first.Vcpus[0];
        var regs = v.GetRegs();
        regs.Rbx = 1000;   // the CPU task's remaining work: short on the second VM
        var sregs = v.GetSregs();
        var events = v.GetEvents();

        using var second = GuestMachine.Create(config);
        using var fast = new DelayedPageSource(new PatternPageSource(Seed), TimeSpan.FromMilliseconds(1));
        using var secondEngine = (PagingEngine)EngineFactory.Create(new PagingOptions(PagingMode.Exits, Backing.Anonymous) { AsyncPf = apfOptions });
        secondEngine.Start(second, fast);
        var resumed = new TaskProgram(second, kernel, tasks);
        resumed.Restore(0, state);
        second.Vcpus[0].SetSregs(sregs);
        second.Vcpus[0].SetRegs(regs);
        second.Vcpus[0].SetEvents(events);
        var secondHost = secondEngine.AsyncPf!;
        if (sdei is not null) ((Faultline.Paging.AsyncPf.Arm.ArmAsyncPf)secondHost).ImportSdei(0, sdei);
        secondHost.Import(0, exported);
        var outcome = second.RunBooted(secondEngine, TimeSpan.FromSeconds(60));
        Assert.All(outcome.Vcpus, o => Assert.Null(o.Error));

        var r = resumed.Read()[0];
        Assert.Equal(0, r.Mismatches);
        Assert.All(r.Tasks, t => Assert.Equal("done", t.State));
        var acked = secondHost.History().Where(h => h.Acked != 0).Select(h => h.Token).ToHashSet();
        Assert.All(exported.Outstanding, f => Assert.Contains(f.Token, acked));   // each imported token got its one "ready"
        Assert.Equal(0, secondHost.OutstandingOn(0));
        Assert.Equal(pages, secondEngine.Snapshot().Installed);                 // every page fetched once, on the second VM
        Assert.Equal(0, r.Spurious);
        if (secondHost is Faultline.Paging.AsyncPf.Arm.ArmAsyncPf secondArm)
        {
            // the pages the parked tasks had not reached yet fault on the second VM: each enters the imported handler
            var (dispatched, completed, resumedAt, _) = secondArm.Sdei.CountsOf(0);
            Assert.True(dispatched > 0, "no SDEI handler entered on the second VM");
            Assert.Equal(dispatched, completed + resumedAt);
            Assert.Equal(sdei!.Events.Events, secondArm.ExportSdei(0).Events.Events);
        }
    }
}
