using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Uffd;

namespace Faultline.Kvm.Io;

/// <summary>
/// A userfaultfd passed over a Unix socket with SCM_RIGHTS, as Firecracker hands its guest memory's userfaultfd to a
/// page handler: one sendmsg with the payload and one fd, one recvmsg that takes both. The received fd is a SafeHandle
/// (a <see cref="Userfaultfd"/>) the instant recvmsg returns it.
/// </summary>
public static unsafe class FdPassing
{
    /// <summary>Sends <paramref name="payload"/> with <paramref name="uffd"/> attached (the VMM's side).</summary>
    public static void Send(SafeHandle socket, ReadOnlySpan<byte> payload, Userfaultfd uffd)
    {
        var added = false;
        socket.DangerousAddRef(ref added);
        try
        {
            var control = stackalloc byte[SocketConst.OneFdSpace];
            new Span<byte>(control, SocketConst.OneFdSpace).Clear();
            var c = (Cmsghdr*)control;
            c->CmsgLen = SocketConst.OneFdLen;
            c->CmsgLevel = SocketConst.SOL_SOCKET;
            c->CmsgType = SocketConst.SCM_RIGHTS;
            *(int*)(control + 16) = uffd.RawFd;
            fixed (byte* p = payload)
            {
                // SAFETY: payload is pinned for the call; control lives on this stack frame; the fds stay open (refs held).
                var iov = new Iovec { IovBase = (nuint)p, IovLen = (nuint)payload.Length };
                var msg = new Msghdr { MsgIov = (nuint)(&iov), MsgIovlen = 1, MsgControl = (nuint)control, MsgControllen = SocketConst.OneFdSpace };
                if (Libc.Sendmsg((int)socket.DangerousGetHandle(), &msg, 0) < 0) throw new KvmException("sendmsg(SCM_RIGHTS)", Marshal.GetLastPInvokeError());
            }
        }
        finally { if (added) socket.DangerousRelease(); }
    }

    /// <summary>
    /// Receives one message into <paramref name="buffer"/> and the userfaultfd attached to it (the handler's side):
    /// returns the payload length (0: the peer closed), <paramref name="uffd"/> null when no fd came with it.
    /// </summary>
    public static int Receive(SafeHandle socket, Span<byte> buffer, out Userfaultfd? uffd)
    {
        uffd = null;
        var added = false;
        socket.DangerousAddRef(ref added);
        try
        {
            var control = stackalloc byte[SocketConst.OneFdSpace * 4];
            new Span<byte>(control, SocketConst.OneFdSpace * 4).Clear();
            fixed (byte* p = buffer)
            {
                // SAFETY: buffer is pinned for the call; control lives on this stack frame.
                var iov = new Iovec { IovBase = (nuint)p, IovLen = (nuint)buffer.Length };
                var msg = new Msghdr { MsgIov = (nuint)(&iov), MsgIovlen = 1, MsgControl = (nuint)control, MsgControllen = SocketConst.OneFdSpace * 4 };
                var n = Libc.Recvmsg((int)socket.DangerousGetHandle(), &msg, SocketConst.MSG_CMSG_CLOEXEC);
                if (n < 0) throw new KvmException("recvmsg", Marshal.GetLastPInvokeError());
                var c = (Cmsghdr*)control;
                if (msg.MsgControllen >= SocketConst.OneFdLen && c->CmsgLevel == SocketConst.SOL_SOCKET && c->CmsgType == SocketConst.SCM_RIGHTS)
                {
                    var fds = (int)((c->CmsgLen - 16) / 4);
                    for (var i = 0; i < fds; i++)
                    {
                        var fd = new UffdFd(((int*)(control + 16))[i]);   // owned from here on, whatever happens next
                        if (i == 0) uffd = Userfaultfd.Adopt(fd);
                        else fd.Dispose();                                  // only one fd is expected: the rest are closed
                    }
                }
                return (int)n;
            }
        }
        finally { if (added) socket.DangerousRelease(); }
    }
}
