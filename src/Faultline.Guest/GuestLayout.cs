using Faultline.Kvm.Memory;

namespace Faultline.Guest;

/// <summary>
/// Where the generated guest keeps its system structures. The first 4 MiB of guest physical memory (slot 0, always
/// populated, never demand-paged) hold page tables, GDT, per-vCPU TSSs, the IDT, kernel and user code and stacks;
/// guest RAM under test (slot 1) starts at <see cref="RamBase"/>. The low 5 GiB are identity-mapped with 2 MiB pages
/// with the user bit set, so CPL3 workloads reach everything: at most 4 GiB of RAM (it ends at 4 GiB + 4 MiB), then a
/// gap, then <see cref="Doorbell"/>, the map's last page. The doorbell is mapped but outside every memslot: a store
/// there exits as MMIO at both privilege levels, which is the guest ABI's channel. It lies above 4 GiB, so guest code
/// loads it with <c>mov r64, imm64</c>.
/// </summary>
public static class GuestLayout
{
    public const ulong Pml4 = 0x1000;
    public const ulong Pdpt = 0x2000;
    public const ulong PageDirectories = 0x3000;      // 5 PDs: 0..5 GiB, 0x3000..0x7fff (the GDT follows)
    public const int MappedGiB = 5;
    public const ulong Gdt = 0x8000;
    public const int GdtMaxBytes = 0x2000;
    public const ulong TssBase = 0xA000;
    public const int TssStride = 128;
    public const ulong Idt = 0x12000;
    public const ulong VcpuData = 0x13000;            // per-vCPU 64-byte mailboxes (later: async-PF control blocks)
    public const int VcpuDataStride = 64;
    public const ulong KernelCode = 0x20000;
    public const ulong KernelCodeMax = 0x40000;
    public const ulong UserCode = 0x40000;
    public const ulong UserCodeMax = 0x80000;
    public const ulong KernelStacks = 0x100000;       // stack tops: KernelStacks + (i+1) * KernelStackSize
    public const ulong KernelStackSize = 0x1000;
    public const ulong UserStacks = 0x200000;
    public const ulong UserStackSize = 0x2000;
    public const ulong SystemSize = 0x400000;
    public const ulong RamBase = SystemSize;
    /// <summary>The last page of the identity map: above the largest RAM's end, in no memslot.</summary>
    public const ulong Doorbell = ((ulong)MappedGiB << 30) - 0x1000;   // 0x1_3FFF_F000
    public const int MaxVcpus = 256;
    /// <summary>Guest RAM under test: it must end below the doorbell page and inside the identity map.</summary>
    public const ulong MaxRamBytes = 4UL << 30;

    public const ushort KernelCs = 0x08, KernelDs = 0x10, UserCs = 0x18 | 3, UserDs = 0x20 | 3;
    public static ushort TssSelector(int vcpu) => (ushort)(0x28 + 16 * vcpu);
    public static ulong Tss(int vcpu) => TssBase + (ulong)(vcpu * TssStride);
    public static ulong KernelStackTop(int vcpu) => KernelStacks + (ulong)(vcpu + 1) * KernelStackSize;
    public static ulong UserStackTop(int vcpu) => UserStacks + (ulong)(vcpu + 1) * UserStackSize;
    public static GuestAddress VcpuDataOf(int vcpu) => new(VcpuData + (ulong)(vcpu * VcpuDataStride));
}
