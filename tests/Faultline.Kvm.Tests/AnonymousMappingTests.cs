using Faultline.Kvm.Memory;

namespace Faultline.Kvm.Tests;

public sealed class AnonymousMappingTests
{
    [Fact]
    public void Bytes_written_are_read_back_and_the_bounds_hold()
    {
        using var m = new AnonymousMapping(4 << 20, populate: true);
        Assert.Equal(4UL << 20, m.Size);
        Assert.True(m.Span(0, 4 << 20).IndexOfAnyExcept((byte)0) < 0);     // fresh anonymous memory is zero
        m.Span((4 << 20) - 4096, 4096).Fill(0x5A);
        Assert.True(m.Span((4 << 20) - 4096, 4096).IndexOfAnyExcept((byte)0x5A) < 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Span((4 << 20) - 4095, 4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Span(5 << 20, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AnonymousMapping(0, populate: false));
    }
}

/// <summary>Reads /proc/self/maps: runs alone (another test's mapping could take the freed range).</summary>
[Collection(nameof(ProcessWide))]
public sealed unsafe class AnonymousMappingLifetimeTests
{
    private static bool Mapped(ulong address) => File.ReadLines("/proc/self/maps").Any(l =>
    {
        var range = l[..l.IndexOf(' ')].Split('-');
        return address >= Convert.ToUInt64(range[0], 16) && address < Convert.ToUInt64(range[1], 16);
    });

    [Fact]
    public void Dispose_unmaps_it()
    {
        var m = new AnonymousMapping(1 << 20, populate: false);
        ulong at;
        fixed (byte* p = m.Span(0, 1)) at = (ulong)p;
        m.Span(0, 1).Fill(1);
        Assert.True(Mapped(at), "the mapping is not listed while alive");
        m.Dispose();
        m.Dispose();   // twice is fine
        Assert.Throws<ObjectDisposedException>(() => m.Span(0, 1));
        Assert.False(Mapped(at), "the mapping is still listed after Dispose");
    }
}
