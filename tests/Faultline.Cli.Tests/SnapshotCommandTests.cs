using System.Text.Json;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary><c>faultline snapshot save|restore</c> end to end in-process: the JSON report's fields, and bad snapshots as one line with exit code 2.</summary>
public sealed class SnapshotCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"fl-snapcli-{Guid.NewGuid():N}");

    [KvmFact]
    public void Save_then_restore_reports_every_field_and_the_second_restore_replays_the_first_ones_touches()
    {
        var save = CliRunner.Run("snapshot", "save", _dir, "--vcpus", "2", "--mem", "8M", "--json", "-");
        Assert.True(save.ExitCode == 0, save.ToString());
        using (var s = JsonDocument.Parse(save.Stdout)) Assert.True(s.RootElement.GetProperty("zero_pages").GetInt64() > 0);

        var first = CliRunner.Run("snapshot", "restore", _dir, "--engine", "exits", "--json", "-");
        Assert.True(first.ExitCode == 0, first.ToString());
        using var j = JsonDocument.Parse(first.Stdout);
        var r = j.RootElement;
        foreach (var field in new[] { "first_instruction_ms", "resident_ms", "pages_demand", "pages_prefetched", "pages_zero", "faults_avoided_by_replay", "guest_mismatches", "eager_first_instruction_ms" })
            Assert.True(r.TryGetProperty(field, out _), $"no {field} in {first.Stdout}");
        Assert.True(r.GetProperty("fault_latency_us").TryGetProperty("p99", out _));
        Assert.Equal(0, r.GetProperty("guest_mismatches").GetInt64());
        Assert.True(r.GetProperty("recorded").GetBoolean());
        Assert.True(File.Exists(Path.Combine(_dir, "workingset.bin")));

        var second = CliRunner.Run("snapshot", "restore", _dir, "--engine", "exits", "--no-eager", "--json", "-");
        Assert.True(second.ExitCode == 0, second.ToString());
        using var k = JsonDocument.Parse(second.Stdout);
        Assert.True(k.RootElement.GetProperty("replayed").GetBoolean());
        Assert.Equal(r.GetProperty("pages_demand").GetInt64() + r.GetProperty("pages_demand_zero").GetInt64(), k.RootElement.GetProperty("working_set_pages").GetInt64());
    }

    [KvmFact]
    public void A_bad_snapshot_is_one_line_exit_2_and_nothing_on_stdout()
    {
        Assert.Equal(0, CliRunner.Run("snapshot", "save", _dir, "--vcpus", "1", "--mem", "4M").ExitCode);
        File.WriteAllText(Path.Combine(_dir, "manifest.json"), "not json");
        var r = CliRunner.Run("snapshot", "restore", _dir);
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: ", line);
        Assert.Contains("manifest.json is not valid JSON", line);
        Assert.Equal("", r.Stdout);
    }

    [Fact]
    public void Save_refuses_a_directory_that_is_not_empty_and_leaves_it_as_it_was()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "keep.txt"), "x");
        var r = CliRunner.Run("snapshot", "save", _dir, "--mem", "4M");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("is not empty", Assert.Single(r.StderrLines));
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void Restore_of_a_directory_that_does_not_exist_is_one_line()
    {
        var r = CliRunner.Run("snapshot", "restore", _dir, "--engine", "exits");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("no such directory", Assert.Single(r.StderrLines));
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
