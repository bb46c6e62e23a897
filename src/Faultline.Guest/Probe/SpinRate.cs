namespace Faultline.Guest.Probe;

/// <summary>A Spin workload's progress over one measured KVM_RUN: RBX increments per second.</summary>
public readonly record struct SpinRate(PrivilegeLevel Level, ulong Iterations, TimeSpan Elapsed)
{
    public double PerSecond => Elapsed > TimeSpan.Zero ? Iterations / Elapsed.TotalSeconds : 0;
}
