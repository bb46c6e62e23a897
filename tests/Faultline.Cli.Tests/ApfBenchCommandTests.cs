using System.Text.Json;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

public sealed class ApfBenchCommandTests
{
    private static readonly string[] RowKeys =
        ["protocol", "policy", "vcpus", "mem_tasks", "latency_us", "seconds", "speedup", "ideal_speedup", "not_present", "ready", "notify_us_p50", "notify_us_p99", "delivery_late_us_max", "delivery_real_time",
         "gc_collections", "gc_pause_ms_max"];

    [KvmFact]
    public void Bench_apf_writes_sync_always_and_auto_rows_with_the_documented_keys()
    {
        var json = Path.Combine(Path.GetTempPath(), $"fl-apf-{Environment.ProcessId}.json");
        var svg = Path.ChangeExtension(json, ".svg");
        try
        {
            var r = CliRunner.Run("bench", "apf", "--latency", "5ms", "--vcpus", "1", "--mem-tasks", "1", "--repeat", "1", "--json", json, "--svg", svg);
            Assert.True(r.ExitCode == 0, r.ToString());
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
            Assert.Equal(["sync/never", "x86/always", "x86/auto"], rows.Select(x => $"{x.GetProperty("protocol").GetString()}/{x.GetProperty("policy").GetString()}"));
            foreach (var row in rows)
            {
                foreach (var k in RowKeys) Assert.True(row.TryGetProperty(k, out _), $"row lacks {k}: {row}");
                Assert.Equal(0, row.GetProperty("guest_mismatches").GetInt64());
                Assert.Equal(2.0, row.GetProperty("ideal_speedup").GetDouble());
                // SCHED_FIFO by default where the kernel grants it (root may: CAP_SYS_NICE)
                if (Environment.IsPrivilegedProcess) Assert.True(row.GetProperty("delivery_real_time").GetBoolean(), row.ToString());
            }
            var always = rows[1];
            Assert.Equal(always.GetProperty("not_present").GetInt64(), always.GetProperty("ready").GetInt64());
            Assert.True(always.GetProperty("not_present").GetInt64() > 0);
            Assert.True(always.GetProperty("notify_us_p50").GetDouble() > 0);
            Assert.Equal(0, rows[0].GetProperty("not_present").GetInt64());
            Assert.StartsWith("<svg", File.ReadAllText(svg));
        }
        finally
        {
            File.Delete(json);
            File.Delete(svg);
        }
    }

    [KvmFact]
    public void Bench_apf_with_normal_delivery_says_so_and_how_late_pages_came()
    {
        var r = CliRunner.Run("bench", "apf", "--latency", "2ms", "--vcpus", "1", "--mem-tasks", "1", "--repeat", "1", "--protocol", "sync", "--delivery", "normal", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var row = Assert.Single(doc.RootElement.GetProperty("rows").EnumerateArray());
        Assert.False(row.GetProperty("delivery_real_time").GetBoolean(), row.ToString());
        Assert.True(row.GetProperty("delivery_late_us_max").GetDouble() >= 0);
        Assert.Contains(r.StderrLines, l => l.StartsWith("pages delivered by a normal thread, ", StringComparison.Ordinal) && l.Contains("after its due time"));
    }

    [KvmFact]
    public void Bench_apf_with_the_arm_protocol_writes_its_rows_beside_x86()
    {
        var json = Path.Combine(Path.GetTempPath(), $"fl-apf-arm-{Environment.ProcessId}.json");
        try
        {
            var r = CliRunner.Run("bench", "apf", "--protocol", "sync,x86,arm", "--latency", "5ms", "--vcpus", "1", "--mem-tasks", "1", "--repeat", "1", "--json", json);
            Assert.True(r.ExitCode == 0, r.ToString());
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
            Assert.Equal(["sync/never", "x86/always", "x86/auto", "arm/always", "arm/auto"], rows.Select(x => $"{x.GetProperty("protocol").GetString()}/{x.GetProperty("policy").GetString()}"));
            var arm = rows[3];
            foreach (var k in RowKeys) Assert.True(arm.TryGetProperty(k, out _), $"row lacks {k}: {arm}");
            Assert.Equal(arm.GetProperty("not_present").GetInt64(), arm.GetProperty("ready").GetInt64());
            Assert.True(arm.GetProperty("not_present").GetInt64() > 0);
            Assert.True(arm.GetProperty("exits_per_async_fault").GetDouble() > 1, arm.ToString());   // at least its two conduit calls
            Assert.Equal(0, arm.GetProperty("guest_mismatches").GetInt64());
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Theory]
    [InlineData("--latency", "0", "above zero")]
    [InlineData("--latency", "fast", "is not a latency")]
    [InlineData("--protocol", "sync,ppc", "'ppc' is not one of")]
    [InlineData("--mem-tasks", "5", "--mem-tasks")]
    public void Bad_input_is_one_line_and_exit_2(string option, string value, string message)
    {
        var r = CliRunner.Run("bench", "apf", option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }
}
