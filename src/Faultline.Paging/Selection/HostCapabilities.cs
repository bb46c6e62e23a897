using Faultline.Guest.Probe;
using Faultline.Kvm;
using Faultline.Kvm.Uffd;

namespace Faultline.Paging.Selection;

/// <summary>
/// What the engine selector needs to know of this host: the userfaultfd features offered, whether native KVM
/// Userfault (KVM_MEM_USERFAULT) is there, and how a CPL3 missing page comes back (when a full probe measured it).
/// <see cref="Detect"/> is cheap (a few ioctls); <see cref="FromProbe"/> takes a full <see cref="HostProbe"/> report.
/// </summary>
public sealed record HostCapabilities(UffdFeatures UffdFeatures, bool NativeUserfault, FaultExitKind? Cpl3FaultExit = null)
{
    public bool Has(UffdFeatures f) => (UffdFeatures & f) == f;

    /// <summary>Asks /dev/kvm and userfaultfd directly (no guest is run). Throws <see cref="HostSupportException"/> without them.</summary>
    public static HostCapabilities Detect()
    {
        bool native;
        using (var kvm = KvmSystem.Open()) native = Vm.ProbeNativeUserfault(kvm);
        return new HostCapabilities(Userfaultfd.QueryFeatures(), native);
    }

    public static HostCapabilities FromProbe(ProbeReport report) =>
        new(report.UffdFeatures, report.NativeUserfault, report.Cpl3Fault.Kind);
}
