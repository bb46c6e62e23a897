using System.Text.Json;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

public sealed class RunCommandTests
{
    [KvmTheory]
    [InlineData("user", "anon")]
    [InlineData("user", "shmem")]
    [InlineData("kernel", "anon")]
    public void Run_writes_and_verifies_every_page_with_no_mismatch(string mode, string backing)
    {
        var r = CliRunner.Run("run", "--vcpus", "2", "--mem", "512K", "--guest-mode", mode, "--backing", backing, "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal(2, root.GetProperty("vcpus").GetInt32());
        Assert.Equal(512UL * 1024, root.GetProperty("mem_bytes").GetUInt64());
        Assert.Equal(128UL, root.GetProperty("pages").GetUInt64());
        Assert.Equal(128UL, root.GetProperty("pages_written").GetUInt64());
        Assert.Equal(0UL, root.GetProperty("mismatches").GetUInt64());
        Assert.Equal(0UL, root.GetProperty("host_mismatches").GetUInt64());
        Assert.Equal(mode, root.GetProperty("guest_mode").GetString());
    }

    [KvmFact]
    public void Run_prints_pages_and_mismatches_as_text()
    {
        var r = CliRunner.Run("run", "--vcpus", "4", "--mem", "1M", "--qwords", "512");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("pages: 256, mismatches: 0", r.Stdout);
        Assert.Equal("", r.Stderr);
    }

    [KvmTheory]
    [InlineData("random")]
    [InlineData("hotset")]
    public void Run_with_a_workload_order_verifies_the_pages_it_touched(string workload)
    {
        var r = CliRunner.Run("run", "--vcpus", "2", "--mem", "2M", "--qwords", "8", "--workload", workload, "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal(workload, root.GetProperty("workload").GetString());
        Assert.Equal(512UL, root.GetProperty("pages").GetUInt64());
        Assert.Equal(512UL, root.GetProperty("pages_written").GetUInt64());   // one access per page of the range
        var touched = root.GetProperty("pages_touched").GetUInt64();
        if (workload == "hotset") Assert.InRange(touched, 2UL * 16 + 1, 511UL);
        else Assert.Equal(512UL, touched);
        Assert.Equal(0UL, root.GetProperty("mismatches").GetUInt64());
        Assert.Equal(0UL, root.GetProperty("host_mismatches").GetUInt64());
    }

    [Theory]
    [InlineData("run", "--workload", "zigzag")]
    [InlineData("run", "--workload")]
    [InlineData("bench", "paging", "--workload", "zigzag")]
    public void A_bad_workload_is_one_line_and_exit_2(params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: ", line);
        Assert.Contains("--workload", line);
    }

    [KvmFact]
    public void A_memory_size_that_does_not_split_between_the_vcpus_is_a_usage_error()
    {
        var r = CliRunner.Run("run", "--vcpus", "3", "--mem", "16K");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: ", r.Stderr);
        Assert.Equal("faultline: --mem 16K does not split into 3 vCPUs' whole 4 KiB pages: use a multiple of 12K", Assert.Single(r.StderrLines));
    }
}
