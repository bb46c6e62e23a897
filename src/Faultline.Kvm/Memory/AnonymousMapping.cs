using System.Runtime.InteropServices;
using Faultline.Kvm.Interop;

namespace Faultline.Kvm.Memory;

/// <summary>
/// Private anonymous host memory outside the managed heap (a buffer larger than a span's 2 GiB may be): mapped with
/// MAP_NORESERVE, transparent huge pages asked for where the kernel has them, and optionally populated at once
/// (MADV_POPULATE_WRITE), so that first-touch faults are paid now and not by whoever writes it first. Read and
/// written through spans of at most 2 GiB; unmapped on Dispose.
/// </summary>
public sealed unsafe class AnonymousMapping : IDisposable
{
    private byte* _base;

    public ulong Size { get; }

    public AnonymousMapping(ulong size, bool populate)
    {
        if (size == 0) throw new ArgumentOutOfRangeException(nameof(size));
        Size = size;
        var p = Libc.Mmap(null, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (p == Libc.MAP_FAILED) throw new KvmException("mmap(anonymous)", Marshal.GetLastPInvokeError());
        Libc.Madvise(p, (nuint)size, Libc.MADV_HUGEPAGE);                 // advisory: without THP it is just slower
        if (populate) Libc.PopulateWrite(p, size);   // advisory too: unpopulated pages fault in on first touch
        _base = (byte*)p;
    }

    /// <summary><paramref name="length"/> bytes at <paramref name="offset"/>.</summary>
    public Span<byte> Span(ulong offset, int length)
    {
        var b = _base;
        ObjectDisposedException.ThrowIf(b == null, this);
        if (length < 0 || offset > Size || (ulong)length > Size - offset) throw new ArgumentOutOfRangeException(nameof(offset), $"{length} bytes at {offset} are not inside the {Size}-byte mapping");
        // SAFETY: bounds checked above; the mapping lives until Dispose.
        return new Span<byte>(b + offset, length);
    }

    public void Dispose()
    {
        var b = _base;
        if (b == null) return;
        _base = null;
        Libc.Munmap(b, (nuint)Size);
    }
}
