using System.Runtime.InteropServices;
using Faultline.Kvm.Memory;

namespace Faultline.Paging.Engines.Bitmap;

/// <summary>
/// KVM Userfault's per-memslot bitmap: one bit per 4 KiB page, bit 0 = the slot's first page, stored as the
/// `unsigned long` array KVM_MEM_USERFAULT reads (native memory, so its address can be handed to the kernel).
/// Mark sets bits; Clear clears one with a release store (KVM reads with a plain load after the page is fixed).
/// </summary>
public sealed unsafe class UserfaultBitmap : IDisposable
{
    private ulong* _words;
    public ulong Pages { get; }
    public long WordCount { get; }
    public long MemoryBytes => WordCount * 8;
    public HostAddress Address => new((ulong)_words);

    public UserfaultBitmap(ulong pages)
    {
        Pages = pages;
        WordCount = (long)((pages + 63) / 64);
        _words = (ulong*)NativeMemory.AllocZeroed((nuint)(WordCount * 8));
    }

    public bool IsMarked(ulong page) => (Volatile.Read(ref _words[page >> 6]) & (1UL << (int)(page & 63))) != 0;

    /// <summary>Marks one page; returns true if it was not marked.</summary>
    public bool Mark(ulong page) => (Interlocked.Or(ref _words[page >> 6], 1UL << (int)(page & 63)) & (1UL << (int)(page & 63))) == 0;

    /// <summary>Clears one page (the fault is fixed); returns true if it was marked.</summary>
    public bool Clear(ulong page) => (Interlocked.And(ref _words[page >> 6], ~(1UL << (int)(page & 63))) & (1UL << (int)(page & 63))) != 0;

    /// <summary>Marks [first, first+count).</summary>
    public void MarkRange(ulong first, ulong count)
    {
        for (var p = first; p < first + count; p++) Mark(p);
    }

    public void MarkAll()
    {
        for (long w = 0; w < WordCount; w++) Volatile.Write(ref _words[w], ~0UL);
        var tail = (int)(Pages & 63);
        if (tail != 0) Volatile.Write(ref _words[WordCount - 1], (1UL << tail) - 1);
    }

    public long CountMarked()
    {
        long n = 0;
        for (long w = 0; w < WordCount; w++) n += (long)ulong.PopCount(Volatile.Read(ref _words[w]));
        return n;
    }

    public void Dispose()
    {
        var w = _words;
        _words = null;
        if (w != null) NativeMemory.Free(w);
    }
}
