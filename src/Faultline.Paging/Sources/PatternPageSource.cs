using System.Runtime.InteropServices;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Sources;

/// <summary>
/// Deterministic pages: the qword at GPA a holds a + seed, the very pattern the guest's Verify workload checks.
/// Every page and every offset differ, and so do two seeds (generations). Immediate: a request fills the calling
/// thread's page buffer and installs it before it returns.
/// </summary>
public sealed class PatternPageSource(ulong seed) : IImmediatePageSource
{
    private long _served;
    private IPageSink? _sink;

    public ulong Seed { get; } = seed;
    public long PagesServed => Interlocked.Read(ref _served);
    public bool CompletesOnRequest => true;
    public TimeSpan ExpectedLatency => TimeSpan.Zero;

    public void Start(IPageSink sink) => _sink = sink;

    public void Request(GuestAddress page)
    {
        var buf = PageBuffer.Span;
        Read(page, buf);
        _sink!.Install(page, buf);
    }

    public void Read(GuestAddress page, Span<byte> destination)
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
