using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm;

/// <summary>/dev/kvm: API version, capabilities, VM creation.</summary>
public sealed class KvmSystem : IDisposable
{
    public const string DevicePath = "/dev/kvm";
    private readonly KvmFd _fd;

    /// <summary>
    /// KVM_CAP_USERFAULT has no stable number (239 in Houghton v1/v2, 243 in v3) and mainline gave both to other caps,
    /// so a native KVM Userfault is only trusted when probing the memslot flag itself succeeds (see <see cref="Vm.ProbeNativeUserfault"/>).
    /// </summary>
    public static readonly uint[] UserfaultCapCandidates = [239, 243];

    private KvmSystem(KvmFd fd) => _fd = fd;

    public static KvmSystem Open()
    {
        var fd = new KvmFd(Libc.Open(DevicePath, Libc.O_RDWR | Libc.O_CLOEXEC, 0));
        if (fd.IsInvalid)
        {
            var e = Marshal.GetLastPInvokeError();
            throw e switch
            {
                Errno.ENOENT => new HostSupportException($"{DevicePath} does not exist: load the kvm module (kvm_intel/kvm_amd) or run on a host with KVM"),
                Errno.EACCES or Errno.EPERM => new HostSupportException($"{DevicePath} is not accessible: run as root or add this user to the kvm group"),
                _ => new HostSupportException($"{DevicePath} cannot be opened: {Errno.Describe(e)}"),
            };
        }
        var kvm = new KvmSystem(fd);
        var version = kvm.ApiVersion;
        if (version != KvmConst.KVM_API_VERSION)
        {
            kvm.Dispose();
            throw new HostSupportException($"{DevicePath} reports KVM API version {version}, expected {KvmConst.KVM_API_VERSION}");
        }
        return kvm;
    }

    public int ApiVersion => Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_GET_API_VERSION, 0);

    /// <summary>KVM_CHECK_EXTENSION on /dev/kvm: 0 = absent, else the capability's value.</summary>
    public int CheckExtension(KvmCap cap) => CheckExtension((uint)cap);

    public int CheckExtension(uint cap)
    {
        var r = Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_CHECK_EXTENSION, cap);
        return r < 0 ? 0 : r;
    }

    public int VcpuMmapSize
    {
        get
        {
            var r = Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_GET_VCPU_MMAP_SIZE, 0);
            if (r <= 0) throw new KvmException("KVM_GET_VCPU_MMAP_SIZE", Marshal.GetLastPInvokeError());
            return r;
        }
    }

    /// <summary>KVM_CREATE_VM (default type). EINTR is retried a bounded number of times, as firecracker does.</summary>
    public Vm CreateVm()
    {
        for (var attempt = 0; ; attempt++)
        {
            var fd = new VmFd(Libc.Ioctl(_fd.Fd, KvmIoctls.KVM_CREATE_VM, 0));
            if (!fd.IsInvalid) return new Vm(this, fd);
            var e = Marshal.GetLastPInvokeError();
            fd.SetHandleAsInvalid();
            if (e != Errno.EINTR || attempt >= 5) throw new KvmException("KVM_CREATE_VM", e);
        }
    }

    public void Dispose() => _fd.Dispose();
}
