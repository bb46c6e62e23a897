using System.Runtime.InteropServices;
using Faultline.Kvm.Memory;

namespace Faultline.Paging.Sources;

/// <summary>
/// Deterministic pages: the qword at GPA a holds a + seed, the very pattern the guest's Verify workload checks.
/// Every page and every offset differ, and so do two seeds (generations).
/// </summary>
public sealed class PatternPageSource(ulong seed) : IPageSource
{
    private long _served;

    public ulong Seed { get; } = seed;
    public long PagesServed => Interlocked.Read(ref _served);

    public void ReadPage(GuestAddress page, Span<byte> destination)
    {
        Fill(page, Seed, destination);
        Interlocked.Increment(ref _served);
    }

    public static void Fill(GuestAddress page, ulong seed, Span<byte> destination)
    {
        var q = MemoryMarshal.Cast<byte, ulong>(destination[..4096]);
        var v = page.Value + seed;
        for (var i = 0; i < q.Length; i++, v += 8) q[i] = v;
    }

    /// <summary>The value the pattern puts at <paramref name="gpa"/>.</summary>
    public ulong ValueAt(GuestAddress gpa) => gpa.Value + Seed;

    public string Describe() => $"pattern (qword at a = a + 0x{Seed:x})";
}
