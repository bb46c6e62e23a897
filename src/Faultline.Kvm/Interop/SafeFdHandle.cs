using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

/// <summary>A file descriptor owned from the instant it exists; closing it is the only release.</summary>
public abstract class SafeFdHandle : SafeHandle
{
    protected SafeFdHandle(int fd) : base(invalidHandleValue: -1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => (long)handle is < 0 or > int.MaxValue;

    /// <summary>The raw fd; only valid inside a DangerousAddRef/Release bracket or while this handle is alive.</summary>
    internal int Fd => (int)handle;

    protected override bool ReleaseHandle() => Libc.Close((int)handle) == 0;
}

internal sealed class KvmFd(int fd) : SafeFdHandle(fd);
internal sealed class VmFd(int fd) : SafeFdHandle(fd);
internal sealed class VcpuFd(int fd) : SafeFdHandle(fd);
internal sealed class UffdFd(int fd) : SafeFdHandle(fd);
internal sealed class MemFd(int fd) : SafeFdHandle(fd);
internal sealed class EventFdHandle(int fd) : SafeFdHandle(fd);
internal sealed class PlainFd(int fd) : SafeFdHandle(fd);
