namespace Faultline.Cli.Tests;

/// <summary>One size parser and one set of limits: every command says the broken limit the same way, in the user's units.</summary>
public sealed class SizeLimitTests
{
    [Theory]
    [InlineData("run")]
    [InlineData("migrate")]
    public void Sizes_above_below_or_not_splitting_are_one_message_for_every_command(string command)
    {
        Expect("faultline: --mem 1T is above the 4 GiB limit", command, "--mem", "1T");
        Expect("faultline: --mem 5G is above the 4 GiB limit", command, "--mem", "5G");
        Expect("faultline: --mem 4100M is above the 4 GiB limit", command, "--mem", "4100M");
        Expect("faultline: --mem 2K is below the 4 KiB minimum", command, "--mem", "2K");
        Expect("faultline: --mem 0: the size must not be zero", command, "--mem", "0");
        Expect("faultline: --mem '12Q' is not a size (use e.g. 512K, 64M, 2G)", command, "--mem", "12Q");
        Expect("faultline: --mem 64M does not split into 3 vCPUs' whole 4 KiB pages: use a multiple of 12K", command, "--vcpus", "3", "--mem", "64M");
        Expect("faultline: --mem 5000 does not split into whole 4 KiB pages: use a multiple of 4K", command, "--vcpus", "1", "--mem", "5000");
    }

    [Fact]
    public void The_source_and_a_prepared_destination_check_sizes_the_same_way()
    {
        Expect("faultline: --mem 1T is above the 4 GiB limit", "migrate", "source", "--listen", "127.0.0.1:0", "--mem", "1T");
        Expect("faultline: --mem 64M does not split into 3 vCPUs' whole 4 KiB pages: use a multiple of 12K",
            "migrate", "dest", "--connect", "127.0.0.1:1", "--vcpus", "3", "--mem", "64M");
    }

    [Fact]
    public void Bench_per_vcpu_sizes_name_the_total_that_broke_the_limit()
    {
        Expect("faultline: --mem-per-vcpu 3G × 2 vCPUs is 6 GiB, above the 4 GiB limit", "bench", "paging", "--mem-per-vcpu", "3G", "--vcpus", "2");
        Expect("faultline: --mem-per-vcpu 1T is above the 4 GiB limit", "bench", "paging", "--mem-per-vcpu", "1T");
        Expect("faultline: --mem-per-vcpu 5000 is not whole 4 KiB pages: use a multiple of 4K", "bench", "paging", "--mem-per-vcpu", "5000");
    }

    private static void Expect(string message, params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Equal(message, Assert.Single(r.StderrLines));
        Assert.Equal("", r.Stdout);
    }
}
