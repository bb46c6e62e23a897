using Faultline.Kvm.Memory;

namespace Faultline.Kvm.Tests;

public sealed class CacheHintsTests
{
    [Fact]
    public void Prefetch_reads_nothing_changes_nothing_and_takes_any_span()
    {
        var bytes = new byte[3 * 4096 + 17];
        Random.Shared.NextBytes(bytes);
        var copy = bytes.ToArray();
        CacheHints.Prefetch(bytes);                         // whole, unaligned length
        CacheHints.Prefetch(bytes.AsSpan(4095, 2));         // straddling a page boundary
        CacheHints.Prefetch(bytes.AsSpan(bytes.Length));    // empty
        CacheHints.Prefetch(default);
        Assert.Equal(copy, bytes);
    }
}
