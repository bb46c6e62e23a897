using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

/// <summary>errno values this project reacts to, and their names for messages.</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9, EAGAIN = 11,
        ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENOSPC = 28, ENOTTY = 25,
        EPIPE = 32, ENOSYS = 38, EMSGSIZE = 90, ECONNRESET = 104, ENOTCONN = 107, ETIMEDOUT = 110, EHWPOISON = 133;

    public static string Name(int errno) => errno switch
    {
        EPERM => "EPERM", ENOENT => "ENOENT", ESRCH => "ESRCH", EINTR => "EINTR", EIO => "EIO", ENXIO => "ENXIO",
        E2BIG => "E2BIG", EBADF => "EBADF", EAGAIN => "EAGAIN", ENOMEM => "ENOMEM", EACCES => "EACCES", EFAULT => "EFAULT",
        EBUSY => "EBUSY", EEXIST => "EEXIST", ENODEV => "ENODEV", EINVAL => "EINVAL", ENOSPC => "ENOSPC", ENOTTY => "ENOTTY",
        ENOSYS => "ENOSYS", EPIPE => "EPIPE", EMSGSIZE => "EMSGSIZE", ECONNRESET => "ECONNRESET", ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT", EHWPOISON => "EHWPOISON", _ => $"errno {errno}",
    };

    public static string Describe(int errno) => $"{Name(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";
}
