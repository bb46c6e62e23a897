using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Io;

/// <summary>
/// A gather list: up to <see cref="Capacity"/> segments of memory written to a stream socket in order by one
/// sendmsg(2), without first copying them into one buffer (the kernel reads each segment where it is). A segment is
/// only an address and a length: its memory must be pinned or native (a pinned array, guest RAM) and stay valid and
/// unchanged until the send that carries it returns. Allocation-free after construction (the iovec array is allocated
/// once, pinned), reusable with <see cref="Clear"/>; one thread at a time.
/// </summary>
public sealed unsafe class IoVecList
{
    /// <summary>The most segments one sendmsg(2) takes (UIO_MAXIOV; more is EMSGSIZE).</summary>
    public const int MaxCapacity = Libc.UIO_MAXIOV;

    private readonly Iovec[] _array;   // on the pinned object heap: _iov stays valid for the list's lifetime
    private readonly Iovec* _iov;
    private int _first;                // segments before this one are sent
    private int _count;
    private long _length;

    public IoVecList(int capacity = MaxCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, MaxCapacity);
        _array = GC.AllocateArray<Iovec>(capacity, pinned: true);
        // SAFETY: the array is pinned and referenced by _array as long as this object lives.
        _iov = (Iovec*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array));
    }

    public int Capacity => _array.Length;
    /// <summary>Segments not yet sent.</summary>
    public int Count => _count - _first;
    /// <summary>Segments that can still be added before <see cref="Clear"/>.</summary>
    public int Free => _array.Length - _count;
    /// <summary>Bytes not yet sent.</summary>
    public long Length => _length;
    public bool IsEmpty => _length == 0;

    /// <summary>
    /// Appends <paramref name="segment"/>, which must be pinned or native memory that stays valid and unchanged until
    /// the send carrying it returns (the list keeps its address, not its bytes). A segment that starts where the last
    /// one ends extends it instead of taking a new slot; an empty one is ignored.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(ReadOnlySpan<byte> segment)
    {
        if (segment.IsEmpty) return;
        // SAFETY: only the address is taken; the caller keeps the memory pinned (see above).
        var p = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(segment));
        _length += segment.Length;
        if (_count > _first)
        {
            var last = _iov + _count - 1;
            if (last->IovBase + last->IovLen == p) { last->IovLen += (nuint)segment.Length; return; }
        }
        if (_count == _array.Length)
        {
            _length -= segment.Length;
            throw new InvalidOperationException($"the gather list is full ({_array.Length} segments)");
        }
        _iov[_count++] = new Iovec { IovBase = p, IovLen = (nuint)segment.Length };
    }

    public void Clear() { _first = _count = 0; _length = 0; }

    /// <summary>Copies the bytes not yet sent into <paramref name="dst"/> (for a channel that cannot gather); returns how many.</summary>
    public int CopyTo(Span<byte> dst)
    {
        if (_length > dst.Length) throw new ArgumentException($"{_length} bytes do not fit in {dst.Length}", nameof(dst));
        var at = 0;
        for (var i = _first; i < _count; i++)
        {
            // SAFETY: each segment is valid memory until the send returns (Add's contract).
            new ReadOnlySpan<byte>((void*)_iov[i].IovBase, (int)_iov[i].IovLen).CopyTo(dst[at..]);
            at += (int)_iov[i].IovLen;
        }
        return at;
    }

    /// <summary>
    /// Copies as many of the bytes not yet sent as fit into <paramref name="dst"/>, from the front, without dropping them
    /// (a channel that cannot gather sends a long list through one buffer: copy, send, <see cref="Advance"/>); returns how many.
    /// </summary>
    public int CopyFront(Span<byte> dst)
    {
        var at = 0;
        for (var i = _first; i < _count && at < dst.Length; i++)
        {
            var n = (int)Math.Min((long)_iov[i].IovLen, dst.Length - at);
            // SAFETY: each segment is valid memory until the send returns (Add's contract); n is within it.
            new ReadOnlySpan<byte>((void*)_iov[i].IovBase, n).CopyTo(dst[at..]);
            at += n;
        }
        return at;
    }

    /// <summary>Drops the first <paramref name="bytes"/> (what a short write took): whole segments go, a partly written one is shortened at its front.</summary>
    public void Advance(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bytes, _length);
        _length -= bytes;
        while (bytes > 0)
        {
            var v = _iov + _first;
            if ((ulong)bytes >= v->IovLen) { bytes -= (long)v->IovLen; _first++; }
            else { v->IovBase += (nuint)bytes; v->IovLen -= (nuint)bytes; bytes = 0; }
        }
        if (_length == 0) _first = _count = 0;
    }

    /// <summary>
    /// One sendmsg(2) of the bytes not yet sent on the stream socket <paramref name="socket"/> (MSG_NOSIGNAL: a closed
    /// peer is EPIPE, not SIGPIPE). Returns how many bytes the kernel took, having advanced past them (a blocking socket
    /// may take fewer than all when a signal arrives mid-send), or -1 with <paramref name="errno"/> and the list unchanged.
    /// Throws <see cref="ObjectDisposedException"/> if the handle is closed.
    /// </summary>
    public long SendOnce(SafeHandle socket, out int errno)
    {
        errno = 0;
        if (_length == 0) return 0;
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);   // the fd stays open (a concurrent close waits) until the call returns
            var msg = new Msghdr { MsgIov = (nuint)(_iov + _first), MsgIovlen = (nuint)(_count - _first) };
            // SAFETY: the iovec array is pinned for the list's lifetime; every segment is valid until this returns
            // (Add's contract); msg is on this stack frame; the fd is referenced above.
            var n = Libc.Sendmsg((int)socket.DangerousGetHandle(), &msg, Libc.MSG_NOSIGNAL);
            if (n < 0) { errno = Marshal.GetLastPInvokeError(); return -1; }
            Advance(n);
            return n;
        }
        finally
        {
            if (added) socket.DangerousRelease();
        }
    }
}
