using System.Runtime.InteropServices;

namespace Faultline.Paging.Engines;

/// <summary>One page-aligned 4 KiB native buffer per thread, made once: the fault path's scratch page (no allocation per fault).</summary>
public static unsafe class PageBuffer
{
    [ThreadStatic] private static byte* t_page;

    public static byte* Current
    {
        get
        {
            var p = t_page;
            if (p == null)
            {
                p = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
                t_page = p;
                // freed by Release() at thread end; a leaked page on an abandoned thread is 4 KiB
            }
            return p;
        }
    }

    public static Span<byte> Span => new(Current, 4096);

    /// <summary>Frees this thread's buffer (call at the end of a vCPU or reader thread).</summary>
    public static void Release()
    {
        var p = t_page;
        if (p == null) return;
        t_page = null;
        NativeMemory.AlignedFree(p);
    }
}
