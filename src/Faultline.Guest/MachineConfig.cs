using Faultline.Kvm.Memory;

namespace Faultline.Guest;

/// <summary>What a <see cref="GuestMachine"/> is made of.</summary>
public sealed record MachineConfig(int Vcpus, ulong RamBytes, Backing Backing = Backing.Anonymous)
{
    public GuestKernel? Kernel { get; init; }
    /// <summary>RAM in transparent huge pages where the host has them: only for a guest whose memory is never paged on demand (a migration source).</summary>
    public bool HugePages { get; init; }

    public void Validate()
    {
        if (Vcpus < 1 || Vcpus > GuestLayout.MaxVcpus) throw new UsageException($"--vcpus must be within 1..{GuestLayout.MaxVcpus}, not {Vcpus}");
        if (RamBytes == 0) throw new UsageException("guest memory must not be zero");
        if (RamBytes % ((ulong)Vcpus * GuestAddress.PageSize) != 0)
            throw new UsageException($"guest memory {RamBytes} bytes does not split into whole 4 KiB pages per vCPU");
        if (RamBytes > GuestLayout.MaxRamBytes)
            throw new UsageException($"guest memory {Describe(RamBytes)} is more than this guest layout maps ({Describe(GuestLayout.MaxRamBytes)})");
    }

    private static string Describe(ulong bytes) => bytes % (1UL << 20) == 0 ? $"{bytes >> 20} MiB" : $"{bytes} bytes";
}
