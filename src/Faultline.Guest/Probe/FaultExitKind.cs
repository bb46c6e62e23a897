namespace Faultline.Guest.Probe;

/// <summary>What a vCPU saw on its first access to a missing page of a UFFD_FEATURE_SIGBUS userfaultfd.</summary>
public enum FaultExitKind
{
    /// <summary>-EFAULT with KVM_EXIT_MEMORY_FAULT and the GPA (upstream with MEMORY_FAULT_INFO, KVM Userfault).</summary>
    MemoryFault,
    /// <summary>KVM_EXIT_MMIO at a GPA inside a RAM slot: KVM's emulator turned the failed access into MMIO (CPL0 on kvm_pvm).</summary>
    Mmio,
    /// <summary>-EFAULT and no address anywhere (CPL3 on kvm_pvm).</summary>
    Efault,
    /// <summary>No fault reached the VMM: the guest completed its accesses (the page got filled some other way).</summary>
    None,
}
