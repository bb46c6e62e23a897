using Faultline.Kvm;
using Faultline.Kvm.Uffd;

namespace Faultline.Guest.Probe;

/// <summary>
/// What <see cref="HostProbe"/> found: what the host says it offers (API version, capabilities, userfaultfd features)
/// and what it really does, measured with tiny guests (instruction rate per privilege level, the exit a vCPU sees on a
/// missing page of a SIGBUS userfaultfd at each level).
/// </summary>
public sealed record ProbeReport(
    HostInfo Host,
    int KvmApiVersion,
    IReadOnlyList<CapabilityValue> Capabilities,
    IReadOnlyList<RawCapabilityValue> UserfaultCapCandidates,
    bool NativeUserfault,
    UffdFeatures UffdFeatures,
    SpinRate Cpl0Rate,
    SpinRate Cpl3Rate,
    FaultExitObservation Cpl0Fault,
    FaultExitObservation Cpl3Fault,
    TimeSpan Elapsed)
{
    /// <summary>CPL3 faster than this many times CPL0 means CPL0 code goes through KVM's instruction emulator (kvm_pvm: ~5000x).</summary>
    public const double EmulationRatio = 20;

    /// <summary>Guest code at CPL0 is emulated one instruction at a time: the CPL3 spin rate beats it by more than <see cref="EmulationRatio"/>.</summary>
    public bool Cpl0Emulated => Cpl3Rate.PerSecond > EmulationRatio * Cpl0Rate.PerSecond;

    /// <summary>CPL3 iterations/s divided by CPL0 iterations/s (infinity if CPL0 made no progress).</summary>
    public double Cpl3OverCpl0 => Cpl0Rate.PerSecond > 0 ? Cpl3Rate.PerSecond / Cpl0Rate.PerSecond : double.PositiveInfinity;

    /// <summary>The names of the offered <see cref="Kvm.Uffd.UffdFeatures"/> flags, lowest bit first.</summary>
    public IReadOnlyList<string> UffdFeatureNames
    {
        get
        {
            var names = new List<string>();
            foreach (var f in Enum.GetValues<UffdFeatures>())
                if (f != UffdFeatures.None && (UffdFeatures & f) == f) names.Add(f.ToString());
            return names;
        }
    }

    /// <summary>Offered feature bits this build has no name for (a newer kernel).</summary>
    public ulong UnnamedUffdFeatureBits
    {
        get
        {
            ulong known = 0;
            foreach (var f in Enum.GetValues<UffdFeatures>()) known |= (ulong)f;
            return (ulong)UffdFeatures & ~known;
        }
    }

    /// <summary>The value of one probed capability (0 if absent or not probed).</summary>
    public int Capability(KvmCap cap)
    {
        foreach (var c in Capabilities) if (c.Cap == cap) return c.Value;
        return 0;
    }
}
