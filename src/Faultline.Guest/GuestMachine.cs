using System.Diagnostics;
using Faultline.Kvm;
using Faultline.Kvm.Memory;

namespace Faultline.Guest;

/// <summary>
/// A VM in one call (the selftests' vm_create_with_one_vcpu): /dev/kvm, a VM, the system region (slot 0) with the
/// generated guest image, guest RAM under test (slot 1, at <see cref="GuestLayout.RamBase"/>) and the vCPUs.
/// <see cref="Run"/> runs a workload on every vCPU, each on its own named thread. Dispose tears everything down in
/// reverse order; guest RAM goes last.
/// </summary>
public sealed class GuestMachine : IDisposable
{
    private int _disposed;

    public MachineConfig Config { get; }
    public KvmSystem Kvm { get; }
    public Vm Vm { get; }
    public GuestRegion System { get; }
    public GuestRegion Ram { get; }
    public MemorySlot RamSlot { get; }
    public GuestImage Image { get; }
    public IReadOnlyList<Vcpu> Vcpus => Vm.Vcpus;

    private GuestMachine(MachineConfig config, KvmSystem kvm, Vm vm, GuestRegion system, GuestRegion ram, MemorySlot ramSlot, GuestImage image)
    {
        Config = config; Kvm = kvm; Vm = vm; System = system; Ram = ram; RamSlot = ramSlot; Image = image;
    }

    public static GuestMachine Create(MachineConfig config) => Create(config, (GuestImage?)null);

    /// <summary><see cref="Create(MachineConfig)"/> with an image assembled already (for <see cref="MachineConfig.Vcpus"/> vCPUs).</summary>
    public static GuestMachine Create(MachineConfig config, GuestImage? prebuilt) =>
        Create(config, () => prebuilt ?? new GuestImage(config.Vcpus, config.Kernel));

    /// <summary>
    /// <see cref="Create(MachineConfig)"/> with the image asked for only once the VM, its memory and its vCPUs exist, so
    /// that a caller assembling it on another thread overlaps the assembly with the VM's creation.
    /// </summary>
    public static GuestMachine Create(MachineConfig config, Func<GuestImage> image)
    {
        config.Validate();
        var kvm = KvmSystem.Open();
        Vm? vm = null;
        try
        {
            vm = kvm.CreateVm();
            var system = GuestRegion.Create(new GuestAddress(0), GuestLayout.SystemSize, Backing.Anonymous, "faultline-system");
            vm.AddMemory(system);
            var ram = GuestRegion.Create(new GuestAddress(GuestLayout.RamBase), config.RamBytes, config.Backing, "faultline-ram", config.HugePages);
            var slot = vm.AddMemory(ram);
            for (var i = 0; i < config.Vcpus; i++) vm.CreateVcpu(i);
            var code = image();
            if (code.Vcpus != config.Vcpus) throw new ArgumentException($"the image is for {code.Vcpus} vCPU(s), the machine has {config.Vcpus}", nameof(image));
            code.WriteTo(system);
            return new GuestMachine(config, kvm, vm, system, ram, slot, code);
        }
        catch
        {
            vm?.Dispose();
            kvm.Dispose();
            throw;
        }
    }

    public ulong BytesPerVcpu => Config.RamBytes / (ulong)Config.Vcpus;

    /// <summary>The vCPU's own part of guest RAM, as demand_paging_test partitions it.</summary>
    public (GuestAddress Start, GuestAddress End) RangeOf(int vcpu)
    {
        var start = Ram.Base + (ulong)vcpu * BytesPerVcpu;
        return (start, start + BytesPerVcpu);
    }

    /// <summary>Workload arguments covering the vCPU's own range.</summary>
    public WorkloadArgs ArgsFor(int vcpu, ulong seed = 0, int qwordsPerPage = 1, AccessOrder order = AccessOrder.Sequential, ulong seed2 = 0)
    {
        var (s, e) = RangeOf(vcpu);
        return new WorkloadArgs(s.Value, e.Value, seed, qwordsPerPage, order, OrderSeed: (ulong)vcpu * 7919 + 1, Seed2: seed2);
    }

    /// <summary>
    /// Boots every vCPU into the workload and runs them to done() on dedicated threads started together; elapsed time
    /// is from the start barrier to the last join (demand_paging_test's measure). Each thread runs a <see cref="VcpuLoop"/>:
    /// exits that are not guest calls go to <paramref name="handler"/>; anything else unexpected fails that vCPU with a
    /// <see cref="GuestException"/>.
    /// </summary>
    public RunOutcome Run(Workload workload, Func<int, WorkloadArgs> args, PrivilegeLevel level, IExitHandler? handler = null,
        TimeSpan? timeout = null, CancellationToken ct = default)
    {
        for (var i = 0; i < Vcpus.Count; i++) Image.Boot(Vcpus[i], workload, args(i), level);
        return RunBooted(handler, timeout, ct);
    }

    /// <summary>
    /// <see cref="Run(Workload, Func{int, WorkloadArgs}, PrivilegeLevel, IExitHandler?, TimeSpan?, CancellationToken)"/>
    /// for vCPUs the caller has booted itself (registers and special registers set): runs them to done().
    /// </summary>
    public RunOutcome RunBooted(IExitHandler? handler = null, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var n = Vcpus.Count;
        var outcomes = new VcpuOutcome?[n];
        var start = new StartLine(n);
        var loops = new VcpuLoop[n];
        var hooks = new WorkloadRunHooks[n];
        var threads = new Thread[n];
        for (var i = 0; i < n; i++)
        {
            var id = i;
            hooks[i] = new WorkloadRunHooks(start);
            loops[i] = new VcpuLoop(Vcpus[i], hooks[i], handler);
            threads[i] = new Thread(() => outcomes[id] = RunVcpu(loops[id], hooks[id], start)) { Name = $"fl-vcpu{id}", IsBackground = true };
            threads[i].Start();
        }
        start.WaitAllReadyThenGo();   // every vCPU thread is running and spinning: no wake-up latency inside the measure
        var sw = Stopwatch.StartNew();
        var deadline = timeout ?? TimeSpan.FromMinutes(5);
        using (ct.Register(() => { foreach (var l in loops) l.RequestStop(); }))
        {
            foreach (var t in threads)
            {
                var left = deadline - sw.Elapsed;
                if (left < TimeSpan.Zero || !t.Join(left))
                {
                    foreach (var l in loops) l.RequestStop();
                    foreach (var t2 in threads) t2.Join(TimeSpan.FromSeconds(10));
                    throw new GuestException($"guest did not finish within {deadline.TotalSeconds:0.#} s");
                }
            }
        }
        sw.Stop();
        return new RunOutcome(outcomes.Select((o, i) => o ?? new VcpuOutcome(i, 0, [], 0, new GuestException("vCPU thread ended without outcome"))).ToArray(), sw.Elapsed);
    }

    private static VcpuOutcome RunVcpu(VcpuLoop loop, WorkloadRunHooks hooks, StartLine start)
    {
        var id = loop.Vcpu.Id;
        try
        {
            if (loop.Run() == VcpuLoopEnd.Stopped) throw new GuestException($"vCPU {id}: stopped");
            return new VcpuOutcome(id, hooks.Result, hooks.Reports, loop.Exits, null)
            {
                ReportTimestamps = hooks.ReportTimestamps, DoneTimestamp = hooks.DoneTimestamp,
            };
        }
        catch (Exception e)
        {
            if (!hooks.AtStartLine) start.Ready(); // a thread that failed before the start line must not hold the others
            return new VcpuOutcome(id, 0, hooks.Reports, loop.Exits, e);
        }
    }

    /// <summary>A typed error for an exit nobody handled, with the registers that explain it (<see cref="VcpuLoop.Unexpected"/>).</summary>
    public static GuestException Unexpected(Vcpu vcpu, in VcpuExit exit) => VcpuLoop.Unexpected(vcpu, exit);

    public static string ExceptionName(ulong v) => VcpuLoop.ExceptionName(v);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Vm.Dispose();
        Kvm.Dispose();
    }
}
