using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Guest.Probe;

/// <summary>
/// Measures what this host offers and what it really does, with tiny real guests: the KVM API version and the
/// capabilities this project cares about, native KVM Userfault (by trying the memslot flag), the userfaultfd features,
/// the instruction rate at CPL0 and CPL3 (is CPL0 emulated?), and the exit a vCPU sees when it touches a missing page
/// of a UFFD_FEATURE_SIGBUS userfaultfd at each level. Every VM, userfaultfd and thread is gone when it returns or throws.
/// </summary>
public static class HostProbe
{
    /// <summary>The capabilities the report lists, in this order.</summary>
    public static readonly KvmCap[] ReportedCapabilities =
    [
        KvmCap.AsyncPf, KvmCap.AsyncPfInt, KvmCap.UserMemory2, KvmCap.MemoryFaultInfo, KvmCap.GuestMemfd, KvmCap.ExitHypercall,
        KvmCap.X86UserSpaceMsr, KvmCap.X86MsrFilter, KvmCap.SyncRegs, KvmCap.ImmediateExit, KvmCap.ExceptionPayload,
        KvmCap.NrMemslots, KvmCap.MaxVcpus, KvmCap.DirtyLogRing, KvmCap.VmTypes,
    ];

    /// <summary>Guest RAM of each probe VM: a few pages are enough.</summary>
    private const ulong ProbeRamBytes = 64 * 1024;

    public static ProbeReport Run(ProbeOptions? options = null)
    {
        var o = options ?? ProbeOptions.Default;
        var sw = Stopwatch.StartNew();
        int api;
        CapabilityValue[] caps;
        RawCapabilityValue[] candidates;
        bool native;
        using (var kvm = KvmSystem.Open())   // throws HostSupportException naming /dev/kvm if it is missing or closed to us
        {
            api = kvm.ApiVersion;
            caps = Array.ConvertAll(ReportedCapabilities, c => new CapabilityValue(c, kvm.CheckExtension(c)));
            candidates = Array.ConvertAll(KvmSystem.UserfaultCapCandidates, n => new RawCapabilityValue(n, kvm.CheckExtension(n)));
            native = Vm.ProbeNativeUserfault(kvm);
        }
        var features = Userfaultfd.QueryFeatures();  // throws HostSupportException naming /dev/userfaultfd
        var cpl0 = MeasureSpin(PrivilegeLevel.Kernel, o);
        var cpl3 = MeasureSpin(PrivilegeLevel.User, o);
        var fault0 = ObserveMissingPage(PrivilegeLevel.Kernel, o);
        var fault3 = ObserveMissingPage(PrivilegeLevel.User, o);
        sw.Stop();
        return new ProbeReport(DescribeHost(), api, caps, candidates, native, features, cpl0, cpl3, fault0, fault3, sw.Elapsed);
    }

    /// <summary>
    /// Runs the Spin workload (<c>inc rbx; jmp</c>) in a <see cref="VcpuLoop"/> for one window, stopped by another
    /// thread, and reads RBX. The time is taken on the vCPU thread around KVM_RUN, so a late kick does not skew the rate.
    /// </summary>
    public static SpinRate MeasureSpin(PrivilegeLevel level, ProbeOptions? options = null)
    {
        var o = options ?? ProbeOptions.Default;
        var m = GuestMachine.Create(new MachineConfig(1, ProbeRamBytes));
        var joined = true;
        try
        {
            var vcpu = m.Vcpus[0];
            m.Image.Boot(vcpu, Workload.Spin, m.ArgsFor(0), level);
            var spin = new SpinProbeHooks(level);
            var t = new ProbeVcpuThread<SpinRate>(vcpu, "fl-probe-spin", spin, handler: null, spin.Result);
            t.Start();
            Thread.Sleep(o.SpinWindow);
            joined = t.Stop(TimeSpan.FromSeconds(10));
            if (!joined) throw new GuestException($"probe: the {Describe(level)} spin vCPU did not stop when kicked");
            return t.Result;
        }
        finally
        {
            if (joined) m.Dispose();   // never unmap under a vCPU thread that may still run
        }
    }

    /// <summary>
    /// Registers guest RAM (anonymous, 4 KiB pages, all missing) with a MISSING userfaultfd opened with
    /// UFFD_FEATURE_SIGBUS, runs TouchOnce on one RAM page and classifies the first exit that is not a guest call.
    /// </summary>
    public static FaultExitObservation ObserveMissingPage(PrivilegeLevel level, ProbeOptions? options = null)
    {
        var o = options ?? ProbeOptions.Default;
        var m = GuestMachine.Create(new MachineConfig(1, ProbeRamBytes));
        Userfaultfd? uffd = null;
        var joined = true;
        try
        {
            uffd = Userfaultfd.Open(UffdFeatures.Sigbus);
            uffd.Register(m.Ram.Host, m.Ram.Size, UffdRegisterMode.Missing);
            var vcpu = m.Vcpus[0];
            var target = m.Ram.Base + GuestAddress.PageSize;   // the second RAM page: no page of RAM is present
            m.Image.Boot(vcpu, Workload.TouchOnce, new WorkloadArgs(target.Value, target.Value + GuestAddress.PageSize, Seed: 0x5eed), level);
            var probe = new MissingPageProbe(level, target);
            var t = new ProbeVcpuThread<FaultExitObservation>(vcpu, "fl-probe-fault", probe, probe, probe.Result);
            t.Start();
            if (!t.Wait(o.FaultTimeout))
            {
                var u = uffd;
                joined = t.Stop(TimeSpan.FromSeconds(2), unblock: () => u.Dispose());
                throw new HostSupportException(
                    $"probe: a {Describe(level)} access to a missing page of a SIGBUS userfaultfd neither exited nor completed within {o.FaultTimeout.TotalSeconds:0.#} s");
            }
            return t.Result;
        }
        finally
        {
            if (joined)
            {
                uffd?.Dispose();   // the engine before vCPUs, VM and memory (STYLE.md dispose order)
                m.Dispose();
            }
        }
    }

    private static HostInfo DescribeHost()
    {
        string release;
        try { release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim(); }
        catch (IOException) { release = "unknown"; }
        var modules = new List<string>();
        try
        {
            foreach (var d in Directory.GetDirectories("/sys/module", "kvm*")) modules.Add(Path.GetFileName(d));
            modules.Sort(StringComparer.Ordinal);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return new HostInfo(release, RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant(), Environment.ProcessorCount, modules);
    }

    private static string Describe(PrivilegeLevel level) => level == PrivilegeLevel.Kernel ? "CPL0" : "CPL3";

    /// <summary>PascalCase to the kernel's UPPER_SNAKE (X86UserSpaceMsr → X86_USER_SPACE_MSR, UserMemory2 → USER_MEMORY2).</summary>
    public static string UpperSnake(string pascal)
    {
        var sb = new StringBuilder(pascal.Length + 8);
        for (var i = 0; i < pascal.Length; i++)
        {
            var c = pascal[i];
            if (i > 0 && char.IsUpper(c) && (char.IsLower(pascal[i - 1]) || char.IsDigit(pascal[i - 1]))) sb.Append('_');
            sb.Append(char.ToUpperInvariant(c));
        }
        return sb.ToString();
    }
}
