namespace Faultline.TestKit;

/// <summary>
/// The kernel objects Faultline makes that this process holds, counted from the targets of /proc/self/fd:
/// userfaultfds (<c>anon_inode:[userfaultfd]</c>), KVM VMs (<c>anon_inode:kvm-vm</c>) and vCPUs
/// (<c>anon_inode:kvm-vcpu:N</c>), as this host's kernel names them (checked by hand: a VM, two vCPUs and a
/// userfaultfd from /dev/userfaultfd read exactly so).
/// </summary>
public readonly record struct KernelObjects(int Userfaultfds, int Vms, int Vcpus)
{
    public static KernelObjects Of(IEnumerable<string> fdTargets)
    {
        int uffds = 0, vms = 0, vcpus = 0;
        foreach (var t in fdTargets)
        {
            if (t == "anon_inode:[userfaultfd]") uffds++;
            else if (t == "anon_inode:kvm-vm") vms++;
            else if (t.StartsWith("anon_inode:kvm-vcpu:", StringComparison.Ordinal)) vcpus++;
        }
        return new KernelObjects(uffds, vms, vcpus);
    }

    /// <summary>None of the three above <paramref name="baseline"/>'s count.</summary>
    public bool Within(KernelObjects baseline) => Userfaultfds <= baseline.Userfaultfds && Vms <= baseline.Vms && Vcpus <= baseline.Vcpus;
}
