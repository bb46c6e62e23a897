using System.Text.Json;
using System.Text.RegularExpressions;
using Faultline.TestKit;
using Spectre.Console;

namespace Faultline.Cli.Tests;

/// <summary>Output fit for where it goes: plain and full-width when redirected, colour only on a terminal, JSON on stdout with --json -.</summary>
public sealed partial class OutputTests
{
    [GeneratedRegex("\\b[0-9a-f]{64}\\b")]
    private static partial Regex Sha256();

    [Fact]
    public void A_redirected_table_keeps_long_labels_and_values_on_one_line()
    {
        using var w = new StringWriter();
        var label = "a label much longer than an 80-column terminal would leave it room for, so it would wrap there";
        var digest = new string('a', 32) + new string('5', 32);
        var t = new Table().AddColumn("what").AddColumn("value");
        t.AddRow(label, "[green]" + digest + " match[/]");
        Output.Console(w).Write(t);
        var text = w.ToString();
        Assert.DoesNotContain("\u001b", text);
        Assert.Contains(text.Split('\n'), l => l.Contains(label) && l.Contains(digest + " match"));
    }

    [KvmFact]
    public void Migrate_redirected_prints_plain_text_with_whole_digests_and_json_on_stdout_with_json_dash()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);   // stdout is one JSON document, nothing else
        var root = doc.RootElement;
        var source = root.GetProperty("source_sha256").GetString()!;
        Assert.Equal(64 * 1024 * 1024UL, root.GetProperty("ram_bytes").GetUInt64());
        Assert.True(root.GetProperty("digests_match").GetBoolean());
        Assert.Equal(16384, root.GetProperty("source").GetProperty("pages_total").GetInt32());

        // the report went to stderr: no escape codes, each digest whole on its labelled line
        Assert.DoesNotContain("\u001b", r.Stderr);
        var lines = r.StderrLines;
        Assert.Equal(source, Sha256().Match(Assert.Single(lines, l => l.Contains("source sha256"))).Value);
        var received = Assert.Single(lines, l => l.Contains("received sha256"));
        Assert.Contains(root.GetProperty("received_sha256").GetString() + " match", received);
        Assert.Single(lines, l => l.Contains("wall time (this command's start") && l.Contains("start-up") && l.Contains("post-copy"));
        Assert.Single(lines, l => l.Contains("pages at the destination (first copy of each)"));
        Assert.Contains(lines, l => l.StartsWith("source: 16384 pages sent once each", StringComparison.Ordinal) && l.Contains(source));
    }

    [KvmFact]
    public void Migrate_mixed_with_async_pf_reports_the_cpu_task_and_the_async_faults_in_the_table_and_the_json()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--workload", "mixed", "--mem-tasks", "2", "--mem", "32M",
            "--link-delay", "1ms", "--async-pf", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal("mixed", root.GetProperty("workload").GetString());
        Assert.Equal(0, root.GetProperty("guest_mismatches").GetInt64());
        var mixed = root.GetProperty("mixed");
        Assert.Equal(2, mixed.GetProperty("mem_tasks").GetInt32());
        Assert.Equal("auto", mixed.GetProperty("async_pf").GetString());     // --async-pf alone
        Assert.True(mixed.GetProperty("guest_enabled").GetBoolean());
        Assert.True(mixed.GetProperty("not_present").GetInt64() > 0, mixed.ToString());
        Assert.Equal(mixed.GetProperty("not_present").GetInt64(), mixed.GetProperty("ready").GetInt64());
        Assert.True(mixed.GetProperty("cpu_iter_per_s_postcopy").GetDouble() > 0);
        Assert.Single(r.StderrLines, l => l.Contains("CPU task, all vCPUs") && l.Contains("during post-copy"));
        Assert.Single(r.StderrLines, l => l.Contains("async page faults") && l.Contains("--async-pf auto, x86 protocol, guest enabled"));
    }

    [KvmFact]
    public void Migrate_hands_the_postcopy_bandwidth_cap_to_its_source_child_which_reports_it()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "32M", "--max-postcopy-bandwidth", "64M", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.True(doc.RootElement.GetProperty("digests_match").GetBoolean());
        Assert.Equal(64L << 20, doc.RootElement.GetProperty("source").GetProperty("postcopy_bandwidth").GetInt64());
    }

    [KvmFact]
    public void Migrate_mixed_with_the_arm_protocol_carries_it_to_the_source_child_and_reports_its_sdei_handlers()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--workload", "mixed", "--mem", "32M",
            "--link-delay", "1ms", "--async-pf", "always", "--protocol", "arm", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var mixed = doc.RootElement.GetProperty("mixed");
        Assert.Equal(0, doc.RootElement.GetProperty("guest_mismatches").GetInt64());
        Assert.Equal("arm", mixed.GetProperty("protocol").GetString());
        Assert.True(mixed.GetProperty("guest_enabled").GetBoolean());
        Assert.True(mixed.GetProperty("not_present").GetInt64() > 0, mixed.ToString());
        Assert.Equal(mixed.GetProperty("not_present").GetInt64(), mixed.GetProperty("sdei_dispatched").GetInt64());
        Assert.Single(r.StderrLines, l => l.Contains("async page faults") && l.Contains("arm protocol") && l.Contains("SDEI handlers entered"));
    }

    [KvmFact]
    public void The_wall_time_parts_add_up_to_the_wall_time_which_the_process_as_measured_from_outside_exceeds()
    {
        var outside = System.Diagnostics.Stopwatch.StartNew();
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--json", "-");
        outside.Stop();
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        var wall = root.GetProperty("wall_ms").GetDouble();
        var parts = root.GetProperty("wall_parts_ms");
        var sum = 0.0;
        foreach (var p in parts.EnumerateObject())
        {
            Assert.True(p.Value.GetDouble() >= 0, $"{p.Name} is {p.Value.GetDouble()} ms");
            sum += p.Value.GetDouble();
        }
        Assert.Equal(wall, sum, tolerance: 0.5);                                  // rounded to 0.1 ms each
        Assert.True(wall <= outside.Elapsed.TotalMilliseconds, $"wall {wall} ms, the process took {outside.Elapsed.TotalMilliseconds} ms");
        Assert.Equal(root.GetProperty("postcopy_ms").GetDouble(), parts.GetProperty("postcopy").GetDouble(), tolerance: 0.1);
        Assert.True(parts.GetProperty("startup").GetDouble() >= root.GetProperty("startup_prepare_ms").GetDouble());
        Assert.True(wall >= root.GetProperty("total_ms").GetDouble());
    }

    [KvmFact]
    public void Run_on_a_terminal_has_colour_unless_NO_COLOR_or_TERM_dumb()
    {
        var colour = new Regex("\u001b\\[[0-9;]*3[0-9][;m]");   // an SGR foreground colour (30-39, 38;5;n)
        var plain = ChildCli.RunOnTerminal(TimeSpan.FromSeconds(60), new Dictionary<string, string> { ["TERM"] = "xterm-256color" }, "run", "--mem", "512K");
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.Matches(colour, plain.Stdout);   // the terminal really is one: the checks below are not vacuous

        var noColor = ChildCli.RunOnTerminal(TimeSpan.FromSeconds(60), new Dictionary<string, string> { ["TERM"] = "xterm-256color", ["NO_COLOR"] = "1" }, "run", "--mem", "512K");
        Assert.True(noColor.ExitCode == 0, noColor.ToString());
        Assert.Contains("mismatches: 0", noColor.Stdout);
        Assert.DoesNotMatch(colour, noColor.Stdout);

        var dumb = ChildCli.RunOnTerminal(TimeSpan.FromSeconds(60), new Dictionary<string, string> { ["TERM"] = "dumb" }, "run", "--mem", "512K");
        Assert.True(dumb.ExitCode == 0, dumb.ToString());
        Assert.Contains("mismatches: 0", dumb.Stdout);
        Assert.DoesNotContain("\u001b", dumb.Stdout);
    }

    [KvmFact]
    public void Run_json_dash_is_json_on_stdout_and_the_table_on_stderr()
    {
        var r = CliRunner.Run("run", "--vcpus", "2", "--mem", "512K", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.Equal(128UL, doc.RootElement.GetProperty("pages_written").GetUInt64());
        Assert.Contains("pages: 128, mismatches: 0", r.Stderr);
    }

    [KvmFact]
    public void Run_json_to_a_file_leaves_the_table_on_stdout()
    {
        var file = Path.Combine(Path.GetTempPath(), $"fl-run-{Environment.ProcessId}.json");
        try
        {
            var r = CliRunner.Run("run", "--mem", "512K", "--json", file);
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("pages: 128, mismatches: 0", r.Stdout);
            Assert.Equal("", r.Stderr);
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            Assert.Equal(0UL, doc.RootElement.GetProperty("mismatches").GetUInt64());
        }
        finally { File.Delete(file); }
    }

    [KvmFact]
    public void Bench_json_dash_is_json_on_stdout()
    {
        var r = CliRunner.Run("bench", "paging", "--vcpus", "1", "--mem-per-vcpu", "1M", "--modes", "missing", "--repeat", "1", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var row = Assert.Single(doc.RootElement.GetProperty("rows").EnumerateArray());
        Assert.Equal("missing", row.GetProperty("mode").GetString());
        Assert.Equal(256UL, row.GetProperty("pages").GetUInt64());
        Assert.Contains("bench paging", r.Stderr);
        Assert.DoesNotContain("faultline:", r.Stderr);
    }
}
