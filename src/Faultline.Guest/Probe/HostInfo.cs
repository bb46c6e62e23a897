namespace Faultline.Guest.Probe;

/// <summary>The host the probe ran on.</summary>
public sealed record HostInfo(string KernelRelease, string Architecture, int LogicalCpus, IReadOnlyList<string> KvmModules);
