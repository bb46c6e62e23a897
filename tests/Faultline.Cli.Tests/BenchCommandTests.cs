using System.Text.Json;
using Faultline.Paging.Bench;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

public sealed class BenchCommandTests
{
    private static readonly string[] RowKeys =
        ["mode", "backing", "guest_mode", "uffds", "readers", "vcpus", "mem_per_vcpu_mib", "pages", "seconds", "pages_per_sec", "alloc_bytes_per_fault"];

    [KvmFact]
    public void Bench_paging_writes_a_row_per_mode_and_vcpu_count_with_the_documented_keys()
    {
        var json = Path.Combine(Path.GetTempPath(), $"fl-bench-{Environment.ProcessId}.json");
        var svg = Path.ChangeExtension(json, ".svg");
        try
        {
            var r = CliRunner.Run("bench", "paging", "--vcpus", "1,2", "--mem-per-vcpu", "1M", "--modes", "none,missing,minor,exits,bitmap,missing+bitmap,minor+bitmap",
                "--repeat", "1", "--json", json, "--svg", svg);
            Assert.True(r.ExitCode == 0, r.ToString());
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
            Assert.Equal(14, rows.Count);
            foreach (var row in rows)
            {
                foreach (var k in RowKeys) Assert.True(row.TryGetProperty(k, out _), $"row lacks {k}: {row}");
                Assert.True(row.GetProperty("pages_per_sec").GetDouble() > 0);
                Assert.Equal(256UL * (ulong)row.GetProperty("vcpus").GetInt32(), row.GetProperty("pages").GetUInt64());
                Assert.True(row.GetProperty("alloc_bytes_per_fault").GetDouble() < 64); // tiny runs: JIT warm-up dominates; the bound that matters is asserted in Paging.Tests
            }
            Assert.Equal(["none", "missing", "minor", "exits", "bitmap", "missing+bitmap", "minor+bitmap"],
                rows.Select(x => x.GetProperty("mode").GetString()).Distinct());
            Assert.Equal("shmem", rows.First(x => x.GetProperty("mode").GetString() == "minor").GetProperty("backing").GetString());
            Assert.StartsWith("<svg", File.ReadAllText(svg));
            Assert.Contains("missing+bitmap", r.Stdout);
        }
        finally
        {
            File.Delete(json);
            File.Delete(svg);
        }
    }

    [Fact]
    public void Bench_help_shows_defaults_the_way_they_are_typed()
    {
        var r = CliRunner.Run("bench", "paging", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("[default: 1,2,8]", r.Stdout);
        Assert.Contains("[default: 64M]", r.Stdout);
        Assert.DoesNotContain("1|2|8", r.Stdout);
    }

    [Fact]
    public void The_legend_gives_a_per_column_mechanism_with_its_columns_never_one_columns_for_all()
    {
        static BenchRow Row(int vcpus, string mechanism) =>
            new("missing", "anon", "user", "single", vcpus, vcpus, 64, 16384UL * (ulong)vcpus, 1, 1, 0, 0, mechanism, [1.0]);
        var legend = Faultline.Cli.Commands.BenchCommand.Legend([
            Row(1, "userfaultfd MISSING + UFFDIO_COPY by 1 reader(s)"), Row(2, "userfaultfd MISSING + UFFDIO_COPY by 2 reader(s)"),
            Row(8, "userfaultfd MISSING + UFFDIO_COPY by 8 reader(s)")]);
        Assert.Equal("userfaultfd MISSING + UFFDIO_COPY by 1 reader(s) (1 vCPU); userfaultfd MISSING + UFFDIO_COPY by 2 reader(s) (2 vCPUs); "
            + "userfaultfd MISSING + UFFDIO_COPY by 8 reader(s) (8 vCPUs)", legend);
        Assert.Equal("memory-fault exits", Faultline.Cli.Commands.BenchCommand.Legend([Row(1, "memory-fault exits"), Row(2, "memory-fault exits")]));
    }

    [KvmFact]
    public void Bench_paging_hotset_demand_faults_fewer_pages_than_the_range_and_reports_them()
    {
        var json = Path.Combine(Path.GetTempPath(), $"fl-bench-hotset-{Environment.ProcessId}.json");
        try
        {
            var r = CliRunner.Run("bench", "paging", "--vcpus", "1", "--mem-per-vcpu", "2M", "--modes", "none,missing,exits,missing+bitmap", "--workload", "hotset",
                "--repeat", "1", "--json", json);
            Assert.True(r.ExitCode == 0, r.ToString());
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
            Assert.Equal(4, rows.Count);
            foreach (var row in rows)
            {
                Assert.Equal("hotset", row.GetProperty("workload").GetString());
                var pages = row.GetProperty("pages").GetUInt64();
                var touched = row.GetProperty("pages_touched").GetUInt64();
                Assert.Equal(512UL, pages);
                Assert.InRange(touched, 33UL, pages - 1);
                var faults = row.GetProperty("demand_faults").GetInt64();
                if (row.GetProperty("mode").GetString() == "none") Assert.Equal(0, faults);
                else Assert.Equal((long)touched, faults);   // one fault per touched page, none for the untouched
                Assert.True(row.GetProperty("seconds").GetDouble() > 0);
            }
            Assert.Contains("demand faults", r.Stdout);
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Theory]
    [InlineData("--modes", "minor", "--backing", "anon")]
    [InlineData("--modes", "telepathy")]
    [InlineData("--mem-per-vcpu", "0")]
    [InlineData("--mem-per-vcpu", "12Q")]
    [InlineData("--vcpus", "1,banana")]
    [InlineData("--modes", "missing", "--readers", "300")]
    [InlineData("--mem-per-vcpu", "3G", "--vcpus", "2")]   // 6 GiB: above the 4 GiB the layout maps
    [InlineData("--reference", "/nonexistent/refpaging")]
    public void Impossible_bench_input_is_one_line_and_exit_2(params string[] args)
    {
        var r = CliRunner.Run(["bench", "paging", .. args]);
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: ", r.Stderr);
    }
}
