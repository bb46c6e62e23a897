namespace Faultline.Guest;

/// <summary>Where a workload runs. On kvm_pvm CPL3 is native and CPL0 is emulated one instruction at a time (HOST.md).</summary>
public enum PrivilegeLevel
{
    /// <summary>Guest user mode (CPL3): the default.</summary>
    User = 3,
    /// <summary>Guest kernel mode (CPL0).</summary>
    Kernel = 0,
}
