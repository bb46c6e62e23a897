using System.Runtime.CompilerServices;

namespace Faultline.Kvm.Interop;

/// <summary>The kernel's _IO/_IOR/_IOW/_IOWR encoding (asm-generic/ioctl.h): dir&lt;&lt;30 | size&lt;&lt;16 | type&lt;&lt;8 | nr.</summary>
internal static class Ioc
{
    private const uint None = 0, Write = 1, Read = 2;
    private static uint Make(uint dir, uint type, uint nr, uint size) => dir << 30 | size << 16 | type << 8 | nr;
    public static uint IO(uint type, uint nr) => Make(None, type, nr, 0);
    public static unsafe uint IOR<T>(uint type, uint nr) where T : unmanaged => Make(Read, type, nr, (uint)sizeof(T));
    public static unsafe uint IOW<T>(uint type, uint nr) where T : unmanaged => Make(Write, type, nr, (uint)sizeof(T));
    public static unsafe uint IOWR<T>(uint type, uint nr) where T : unmanaged => Make(Read | Write, type, nr, (uint)sizeof(T));
    public static uint IOW(uint type, uint nr, uint size) => Make(Write, type, nr, size);
}

/// <summary>KVM ioctl numbers (uapi/linux/kvm.h), computed from the struct sizes.</summary>
internal static class KvmIoctls
{
    private const uint KVMIO = 0xAE;
    public static readonly uint KVM_GET_API_VERSION = Ioc.IO(KVMIO, 0x00);
    public static readonly uint KVM_CREATE_VM = Ioc.IO(KVMIO, 0x01);
    public static readonly uint KVM_CHECK_EXTENSION = Ioc.IO(KVMIO, 0x03);
    public static readonly uint KVM_GET_VCPU_MMAP_SIZE = Ioc.IO(KVMIO, 0x04);
    public static readonly uint KVM_CREATE_VCPU = Ioc.IO(KVMIO, 0x41);
    public static readonly uint KVM_GET_DIRTY_LOG = Ioc.IOW<KvmDirtyLog>(KVMIO, 0x42);
    public static readonly uint KVM_SET_USER_MEMORY_REGION = Ioc.IOW<KvmUserspaceMemoryRegion>(KVMIO, 0x46);
    public static readonly uint KVM_SET_TSS_ADDR = Ioc.IO(KVMIO, 0x47);
    public static readonly uint KVM_SET_USER_MEMORY_REGION2 = Ioc.IOW<KvmUserspaceMemoryRegion2>(KVMIO, 0x49);
    public static readonly uint KVM_RUN = Ioc.IO(KVMIO, 0x80);
    public static readonly uint KVM_GET_REGS = Ioc.IOR<KvmRegs>(KVMIO, 0x81);
    public static readonly uint KVM_SET_REGS = Ioc.IOW<KvmRegs>(KVMIO, 0x82);
    public static readonly uint KVM_GET_SREGS = Ioc.IOR<KvmSregs>(KVMIO, 0x83);
    public static readonly uint KVM_SET_SREGS = Ioc.IOW<KvmSregs>(KVMIO, 0x84);
    public static readonly uint KVM_INTERRUPT = Ioc.IOW<KvmInterrupt>(KVMIO, 0x86);
    public static readonly uint KVM_SET_SIGNAL_MASK = Ioc.IOW(KVMIO, 0x8b, 4); // struct kvm_signal_mask { __u32 len; __u8 sigset[]; }
    public static readonly uint KVM_NMI = Ioc.IO(KVMIO, 0x9a);
    public static readonly uint KVM_GET_VCPU_EVENTS = Ioc.IOR<KvmVcpuEvents>(KVMIO, 0x9f);
    public static readonly uint KVM_SET_VCPU_EVENTS = Ioc.IOW<KvmVcpuEvents>(KVMIO, 0xa0);
    public static readonly uint KVM_ENABLE_CAP = Ioc.IOW<KvmEnableCap>(KVMIO, 0xa3);
    public static readonly uint KVM_X86_SET_MSR_FILTER = Ioc.IOW<KvmMsrFilter>(KVMIO, 0xc6);
}

/// <summary>userfaultfd ioctl numbers (uapi/linux/userfaultfd.h).</summary>
internal static class UffdIoctls
{
    private const uint UFFDIO = 0xAA;
    public static readonly uint USERFAULTFD_IOC_NEW = Ioc.IO(UFFDIO, 0x00);
    public static readonly uint UFFDIO_REGISTER = Ioc.IOWR<UffdioRegister>(UFFDIO, 0x00);
    public static readonly uint UFFDIO_UNREGISTER = Ioc.IOR<UffdioRange>(UFFDIO, 0x01);
    public static readonly uint UFFDIO_WAKE = Ioc.IOR<UffdioRange>(UFFDIO, 0x02);
    public static readonly uint UFFDIO_COPY = Ioc.IOWR<UffdioCopy>(UFFDIO, 0x03);
    public static readonly uint UFFDIO_ZEROPAGE = Ioc.IOWR<UffdioZeropage>(UFFDIO, 0x04);
    public static readonly uint UFFDIO_MOVE = Ioc.IOWR<UffdioMove>(UFFDIO, 0x05);
    public static readonly uint UFFDIO_WRITEPROTECT = Ioc.IOWR<UffdioWriteprotect>(UFFDIO, 0x06);
    public static readonly uint UFFDIO_CONTINUE = Ioc.IOWR<UffdioContinue>(UFFDIO, 0x07);
    public static readonly uint UFFDIO_API = Ioc.IOWR<UffdioApi>(UFFDIO, 0x3F);
}
