using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

// Layouts from include/uapi/linux/uio.h (struct iovec) and include/linux/socket.h (struct user_msghdr, what
// sendmsg(2) takes from user space; glibc's struct msghdr is the same on x86-64): sizeof(struct iovec) 16;
// sizeof(struct msghdr) 56, msg_iov at 16, msg_iovlen at 24, msg_control at 32, msg_controllen at 40, msg_flags at 48.

/// <summary>struct iovec: one segment of a gather (or scatter) list.</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct Iovec
{
    [FieldOffset(0)] public nuint IovBase;
    [FieldOffset(8)] public nuint IovLen;
}

/// <summary>struct msghdr: a sendmsg(2) request; only the iovec array is used (no address, no control data).</summary>
[StructLayout(LayoutKind.Explicit, Size = 56)]
internal struct Msghdr
{
    [FieldOffset(0)] public nuint MsgName;
    [FieldOffset(8)] public uint MsgNamelen;
    [FieldOffset(16)] public nuint MsgIov;
    [FieldOffset(24)] public nuint MsgIovlen;
    [FieldOffset(32)] public nuint MsgControl;
    [FieldOffset(40)] public nuint MsgControllen;
    [FieldOffset(48)] public int MsgFlags;
}

/// <summary>struct cmsghdr (include/linux/socket.h): a control message header; the data follows at offset 16.</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct Cmsghdr
{
    [FieldOffset(0)] public nuint CmsgLen;
    [FieldOffset(8)] public int CmsgLevel;
    [FieldOffset(12)] public int CmsgType;
}

internal static class SocketConst
{
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int MSG_CTRUNC = 0x8;
    /// <summary>CMSG_SPACE(sizeof(int)): a 16-byte header and one fd, padded to 8 bytes.</summary>
    public const int OneFdSpace = 24;
    /// <summary>CMSG_LEN(sizeof(int)).</summary>
    public const int OneFdLen = 20;
}
