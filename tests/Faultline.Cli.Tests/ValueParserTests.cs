using Faultline.Kvm.Memory;
using Faultline.Paging;

namespace Faultline.Cli.Tests;

public sealed class ValueParserTests
{
    [Theory]
    [InlineData("4096", 4096UL)]
    [InlineData("512K", 512UL * 1024)]
    [InlineData("64M", 64UL << 20)]
    [InlineData("64m", 64UL << 20)]
    [InlineData("64MiB", 64UL << 20)]
    [InlineData("2G", 2UL << 30)]
    [InlineData("1T", 1UL << 40)]
    [InlineData(" 8K ", 8192UL)]
    public void Sizes_parse_with_binary_suffixes(string text, ulong bytes)
    {
        Assert.True(ValueParsers.TryParseSize(text, out var v, out var e), e);
        Assert.Equal(bytes, v);
    }

    [Theory]
    [InlineData("12Q")]
    [InlineData("")]
    [InlineData("M")]
    [InlineData("-1M")]
    [InlineData("1.5G")]
    [InlineData("99999999999999999999")]
    [InlineData("17179869184T")]   // 2^34 TiB overflows 64 bits
    public void Bad_sizes_are_rejected_with_a_reason(string text)
    {
        Assert.False(ValueParsers.TryParseSize(text, out _, out var error));
        Assert.Contains($"'{text}'", error);
    }

    [Theory]
    [InlineData(64UL << 20, "64M")]
    [InlineData(2UL << 30, "2G")]
    [InlineData(1536UL * 1024, "1536K")]
    [InlineData(4097UL, "4097")]
    public void Sizes_format_the_way_they_parse(ulong bytes, string text)
    {
        Assert.Equal(text, ValueParsers.FormatSize(bytes));
        Assert.True(ValueParsers.TryParseSize(text, out var back, out _));
        Assert.Equal(bytes, back);
    }

    [Fact]
    public void Lists_parse_each_item()
    {
        Assert.True(ValueParsers.TryParseList<int>("1,2,8", ValueParsers.TryParseInt, out var ints, out _));
        Assert.Equal([1, 2, 8], ints);
        Assert.True(ValueParsers.TryParseList<ulong>("64M,1G", ValueParsers.TryParseSize, out var sizes, out _));
        Assert.Equal([64UL << 20, 1UL << 30], sizes);
        Assert.False(ValueParsers.TryParseList<int>("1,,8", ValueParsers.TryParseInt, out _, out var e1));
        Assert.Contains("empty", e1);
        Assert.False(ValueParsers.TryParseList<int>("1,x,8", ValueParsers.TryParseInt, out _, out var e2));
        Assert.Contains("'x'", e2);
    }
}

public sealed class MigrateBackingTests
{
    [Theory]
    [InlineData(PagingMode.Exits, "auto", Backing.Shmem)]       // page cache allocated while the destination is prepared
    [InlineData(PagingMode.Minor, "auto", Backing.Shmem)]
    [InlineData(PagingMode.Missing, "auto", Backing.Anonymous)]
    [InlineData(PagingMode.Bitmap, "auto", Backing.Anonymous)]
    [InlineData(PagingMode.Exits, "anon", Backing.Anonymous)]
    [InlineData(PagingMode.Exits, " SHMEM ", Backing.Shmem)]
    public void Backing_follows_the_engine_unless_given(PagingMode engine, string word, Backing expected) =>
        Assert.Equal(expected, Faultline.Cli.Commands.MigrateOptions.BackingFor(engine, word));
}
