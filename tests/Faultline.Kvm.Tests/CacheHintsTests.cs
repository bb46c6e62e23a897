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

    [Theory]
    [InlineData(0, 0, 4096)]          // page-aligned both sides: the non-temporal path
    [InlineData(0, 288, 64 * 4096)]   // a run's pages behind its frame header and preamble: unaligned source
    [InlineData(0, 1, 4096)]          // odd source offset
    [InlineData(32, 0, 128)]          // 32-byte aligned destination, smallest block
    [InlineData(8, 0, 4096)]          // unaligned destination: the plain copy
    [InlineData(0, 0, 100)]           // length not a multiple of 128: the plain copy
    [InlineData(0, 0, 0)]
    public unsafe void CopyNonTemporal_copies_exactly_the_source_and_nothing_else(int dstOffset, int srcOffset, int length)
    {
        var src = GC.AllocateUninitializedArray<byte>(srcOffset + length + 64, pinned: true);
        Random.Shared.NextBytes(src);
        // a page-aligned destination from native memory, then the test's offset into it
        var mem = System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(dstOffset + length + 4096), 4096);
        try
        {
            {
                var all = new Span<byte>(mem, dstOffset + length + 4096);
                all.Fill(0xA5);
                CacheHints.CopyNonTemporal(src.AsSpan(srcOffset, length), all.Slice(dstOffset, length + 64));
                Assert.True(all[..dstOffset].IndexOfAnyExcept((byte)0xA5) < 0, "bytes before the destination changed");
                Assert.True(all.Slice(dstOffset, length).SequenceEqual(src.AsSpan(srcOffset, length)), "the copy differs from the source");
                Assert.True(all[(dstOffset + length)..].IndexOfAnyExcept((byte)0xA5) < 0, "bytes after the copied length changed");
            }
        }
        finally { System.Runtime.InteropServices.NativeMemory.AlignedFree(mem); }
    }

    [Fact]
    public void CopyNonTemporal_refuses_a_shorter_destination()
    {
        var src = new byte[256];
        Assert.Throws<ArgumentException>(() => CacheHints.CopyNonTemporal(src, new byte[128]));
    }
}
