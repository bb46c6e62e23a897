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

    public static GuestMachine Create(MachineConfig config)
    {
        config.Validate();
        var image = new GuestImage(config.Vcpus, config.Kernel);
        var kvm = KvmSystem.Open();
        Vm? vm = null;
        try
        {
            vm = kvm.CreateVm();
            var system = GuestRegion.Create(new GuestAddress(0), GuestLayout.SystemSize, Backing.Anonymous, "faultline-system");
            vm.AddMemory(system);
            image.WriteTo(system);
            var ram = GuestRegion.Create(new GuestAddress(GuestLayout.RamBase), config.RamBytes, config.Backing, "faultline-ram");
            var slot = vm.AddMemory(ram);
            for (var i = 0; i < config.Vcpus; i++) vm.CreateVcpu(i);
            return new GuestMachine(config, kvm, vm, system, ram, slot, image);
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
    /// is from the start barrier to the last join (demand_paging_test's measure). Exits that are not guest calls go to
    /// <paramref name="handler"/>; anything else unexpected fails that vCPU with a <see cref="GuestException"/>.
    /// </summary>
    public RunOutcome Run(Workload workload, Func<int, WorkloadArgs> args, PrivilegeLevel level, IExitHandler? handler = null,
        TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var n = Vcpus.Count;
        for (var i = 0; i < n; i++) Image.Boot(Vcpus[i], workload, args(i), level);
        var outcomes = new VcpuOutcome?[n];
        var start = new StartLine(n);
        var stop = 0;
        var threads = new Thread[n];
        for (var i = 0; i < n; i++)
        {
            var id = i;
            threads[i] = new Thread(() => outcomes[id] = RunVcpu(Vcpus[id], handler, start, ref stop)) { Name = $"fl-vcpu{id}", IsBackground = true };
            threads[i].Start();
        }
        start.WaitAllReadyThenGo();   // every vCPU thread is running and spinning: no wake-up latency inside the measure
        var sw = Stopwatch.StartNew();
        var deadline = timeout ?? TimeSpan.FromMinutes(5);
        using (ct.Register(() => { Volatile.Write(ref stop, 1); foreach (var v in Vcpus) v.Kick(); }))
        {
            foreach (var t in threads)
            {
                var left = deadline - sw.Elapsed;
                if (left < TimeSpan.Zero || !t.Join(left))
                {
                    Volatile.Write(ref stop, 1);
                    foreach (var v in Vcpus) v.Kick();
                    foreach (var t2 in threads) t2.Join(TimeSpan.FromSeconds(10));
                    throw new GuestException($"guest did not finish within {deadline.TotalSeconds:0.#} s");
                }
            }
        }
        sw.Stop();
        return new RunOutcome(outcomes.Select((o, i) => o ?? new VcpuOutcome(i, 0, [], 0, new GuestException("vCPU thread ended without outcome"))).ToArray(), sw.Elapsed);
    }

    private static VcpuOutcome RunVcpu(Vcpu vcpu, IExitHandler? handler, StartLine start, ref int stop)
    {
        var reports = new List<ulong>();
        long exits = 0;
        var started = false;
        try
        {
            vcpu.BindToCurrentThread();
            handler?.OnVcpuThreadStart(vcpu);
            started = true;
            start.ReadyAndSpin();
            while (true)
            {
                var exit = vcpu.Run();
                exits++;
                if (GuestCall.TryDecode(exit, out var call))
                {
                    switch (call.Op)
                    {
                        case GuestOp.Done: return new VcpuOutcome(vcpu.Id, call.Value, reports, exits, null);
                        case GuestOp.Report: reports.Add(call.Value); continue;
                        case GuestOp.Fail: throw new GuestException($"vCPU {vcpu.Id}: guest reported failure code {call.Value}");
                        case GuestOp.Exception: throw DescribeException(vcpu, call.Value);
                        default: throw new GuestException($"vCPU {vcpu.Id}: unknown guest call {call.Op}");
                    }
                }
                if (handler is not null && handler.TryHandleExit(vcpu, exit)) continue;
                if (exit.Kind == VcpuExitKind.Interrupted)
                {
                    if (Volatile.Read(ref stop) != 0) throw new GuestException($"vCPU {vcpu.Id}: stopped");
                    continue;
                }
                throw Unexpected(vcpu, exit);
            }
        }
        catch (Exception e)
        {
            if (!started) start.Ready(); // a thread that failed before the start line must not hold the others
            return new VcpuOutcome(vcpu.Id, 0, reports, exits, e);
        }
        finally
        {
            vcpu.UnbindThread();
            try { handler?.OnVcpuThreadStop(vcpu); } catch { /* the outcome already carries the first error */ }
        }
    }

    /// <summary>
    /// demand_paging_test's start: each vCPU thread says it is ready and spins (yielding, never sleeping) until the
    /// main thread, having seen all of them ready, says go. A blocking barrier would put thread wake-ups (up to
    /// milliseconds on this nested host) inside the measured interval.
    /// </summary>
    private sealed class StartLine(int threads)
    {
        private int _ready;
        private volatile bool _go;

        public void Ready() => Interlocked.Increment(ref _ready);

        public void ReadyAndSpin()
        {
            Ready();
            var spin = new SpinWait();
            while (!_go) spin.SpinOnce(sleep1Threshold: -1);
        }

        public void WaitAllReadyThenGo()
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _ready) < threads) spin.SpinOnce(sleep1Threshold: -1);
            _go = true;
        }

    }

    /// <summary>A typed error for an exit nobody handled, with the registers that explain it.</summary>
    public static GuestException Unexpected(Vcpu vcpu, in VcpuExit exit)
    {
        var rip = SafeRip(vcpu);
        return new GuestException($"vCPU {vcpu.Id}: unexpected exit: {exit} at rip 0x{rip:x}");
    }

    private static GuestException DescribeException(Vcpu vcpu, ulong vector)
    {
        var r = vcpu.GetRegs();
        return new GuestException($"vCPU {vcpu.Id}: guest exception #{ExceptionName(vector)} at rip 0x{r.Rcx:x}, error code 0x{r.Rbx:x}, cr2 0x{r.Rdx:x}");
    }

    public static string ExceptionName(ulong v) => v switch
    {
        0 => "DE", 1 => "DB", 2 => "NMI", 3 => "BP", 4 => "OF", 5 => "BR", 6 => "UD", 7 => "NM", 8 => "DF", 10 => "TS", 11 => "NP",
        12 => "SS", 13 => "GP", 14 => "PF", 16 => "MF", 17 => "AC", 18 => "MC", 19 => "XM", _ => $"vector {v}",
    };

    private static ulong SafeRip(Vcpu vcpu)
    {
        try { return vcpu.GetRegs().Rip; } catch (KvmException) { return 0; }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Vm.Dispose();
        Kvm.Dispose();
    }
}
