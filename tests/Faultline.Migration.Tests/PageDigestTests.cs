using Faultline.Kvm.Memory;
using Faultline.Paging.Sources;

namespace Faultline.Migration.Tests;

/// <summary>The image digest both ends compare, built from per-page CRCs instead of a second copy of guest memory.</summary>
public sealed class PageDigestTests
{
    [Fact]
    public void Pages_recorded_in_any_order_give_the_memorys_digest_and_a_page_at_the_wrong_index_or_one_flipped_bit_does_not()
    {
        const int Pages = 64;
        using var ram = GuestRegion.Create(new GuestAddress(0x100000), Pages * 4096, Backing.Anonymous);
        for (var p = 0; p < Pages; p++) PatternPageSource.Fill(ram.Base + (ulong)p * 4096, 5, ram.Span(ram.Base + (ulong)p * 4096, 4096));
        ram.Span(ram.Base + 9 * 4096, 4096).Clear();   // a zero page, recorded as "zero" without bytes
        var expected = PageDigest.Of(ram).Sha256Hex();

        byte[] Page(int p) => ram.Span(ram.Base + (ulong)p * 4096, 4096).ToArray();
        var inOrder = new PageDigest(Pages);
        var shuffled = new PageDigest(Pages);
        foreach (var p in Enumerable.Range(0, Pages).OrderBy(p => (p * 37) % Pages))
            shuffled.Record((ulong)p, p == 9 ? default : Page(p));
        for (var p = 0; p < Pages; p++) inOrder.Record((ulong)p, Page(p));
        Assert.Equal(expected, inOrder.Sha256Hex());
        Assert.Equal(expected, shuffled.Sha256Hex());

        var swapped = new PageDigest(Pages);
        for (var p = 0; p < Pages; p++) swapped.Record((ulong)p, Page(p is 3 ? 4 : p is 4 ? 3 : p));
        Assert.NotEqual(expected, swapped.Sha256Hex());
        var flipped = new PageDigest(Pages);
        for (var p = 0; p < Pages; p++) { var b = Page(p); if (p == 60) b[1234] ^= 0x10; flipped.Record((ulong)p, b); }
        Assert.NotEqual(expected, flipped.Sha256Hex());
    }
}
