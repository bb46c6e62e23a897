namespace Faultline.Guest.Probe;

/// <summary>How long the probe's experiments run.</summary>
/// <param name="SpinWindow">How long the Spin workload runs at each privilege level.</param>
/// <param name="FaultTimeout">How long a missing-page experiment may take before the probe gives up on it.</param>
public sealed record ProbeOptions(TimeSpan SpinWindow, TimeSpan FaultTimeout)
{
    public static ProbeOptions Default { get; } = new(TimeSpan.FromMilliseconds(150), TimeSpan.FromSeconds(5));
}
