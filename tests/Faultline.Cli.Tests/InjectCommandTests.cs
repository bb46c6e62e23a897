using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>
/// `migrate --inject`: a cut link is rejoined and the migration completes; a killed source ends it with one line and a
/// failure object; a killed destination leaves the source its paused guest, and a second destination completes it.
/// </summary>
public sealed class InjectCommandTests
{
    [KvmFact]
    public void A_cut_link_is_rejoined_and_the_migration_completes_exactly()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--workload", "random", "--inject", "cut-link@2000", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("\"reconnects\": 1", r.Stdout);
        Assert.Contains("\"injected\": \"cut-link@2000\"", r.Stdout);
        Assert.Contains("\"digests_match\": true", r.Stdout);
        Assert.Contains("\"guest_mismatches\": 0", r.Stdout);
        Assert.Contains("\"rejoins\": 1", r.Stdout);   // the source's own count, in its JSON
        Assert.Contains("injected cut-link at ", r.Stderr);
    }

    [KvmFact]
    public void A_delay_and_a_corrupted_frame_from_the_command_line_are_survived_on_the_same_connection()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--workload", "random", "--inject", "delay@2000:300ms,corrupt@4000", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("\"injected\": \"delay@2000:300ms,corrupt@4000\"", r.Stdout);
        Assert.Contains("\"reconnects\": 0", r.Stdout);
        Assert.Contains("\"frames_damaged\": 1", r.Stdout);
        Assert.Contains("\"digests_match\": true", r.Stdout);
        Assert.Contains("\"guest_mismatches\": 0", r.Stdout);
        Assert.Contains("injected delay at ", r.Stderr);
        Assert.Contains("injected corrupt at ", r.Stderr);
    }

    [KvmFact]
    public void A_cut_TLS_link_is_rejoined_through_TLS_and_the_key_proof_again()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--workload", "random", "--tls", "on", "--inject", "cut-link@2000", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("\"reconnects\": 1", r.Stdout);
        Assert.Contains("TLS 1.3", r.Stdout);
        Assert.Contains("\"digests_match\": true", r.Stdout);
    }

    [KvmFact]
    public void A_killed_source_ends_the_migration_with_one_line_and_a_failure_object()
    {
        var r = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "--mem", "64M", "--workload", "random", "--inject", "kill-source@3000", "--json", "-");
        Assert.Equal(5, r.ExitCode);
        Assert.Contains("faultline: the source process was killed by signal 9 (SIGKILL)", r.Stderr);
        Assert.Contains("\"failure\": {", r.Stdout);
        Assert.Contains("\"phase\": \"postcopy\"", r.Stdout);
        Assert.Contains("\"guest_state\": \"stopped on the destination with ", r.Stdout);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [KvmFact]
    public void A_destination_killed_by_its_injection_leaves_the_source_its_guest_and_a_second_destination_completes_it()
    {
        const ulong mem = 64 << 20;
        var pages = (long)(mem / 4096);
        using var source = SourceProcess.Start("--mem", "64M", "--workload", "random", "--wait-dest", "30", "--rejoin-wait", "2");

        // the destination dies by SIGKILL at 30% of the pages: a crash, so nothing of it unwinds and nothing is reported
        var first = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "dest", "--connect", source.Address, "--workload", "random", "--inject", "kill-dest@30%", "--json", "-");
        Assert.True(first.ExitCode == 128 + 9, first.ToString());
        var at = Regex.Match(first.Stderr, @"faultline: injected kill-dest at (\d+) pages received");
        Assert.True(at.Success, first.ToString());
        Assert.InRange(long.Parse(at.Groups[1].Value, CultureInfo.InvariantCulture), (long)Math.Round(pages * 0.3), pages - 1);
        Assert.Equal("", first.Stdout);   // no report, no failure object: the process was gone before it could write one

        // the source keeps the paused guest and every page, waits out --rejoin-wait, then takes the next destination
        Assert.True(source.WaitForStderr("waiting up to 30 s for another", TimeSpan.FromSeconds(60)), $"the source did not wait for another destination: {source.Stderr}");
        Assert.Contains($"the source keeps the paused guest and all {pages} pages", source.Stderr);
        Assert.Contains("the destination did not rejoin within 2 s", source.Stderr);

        var second = ChildCli.Run(TimeSpan.FromSeconds(120), null, "migrate", "dest", "--connect", source.Address, "--workload", "random", "--json", "-");
        Assert.True(second.ExitCode == 0, second.ToString());
        using var report = JsonDocument.Parse(second.Stdout);
        var r = report.RootElement;
        Assert.Equal(pages, r.GetProperty("pages_total").GetInt64());
        Assert.Equal(0, r.GetProperty("guest_mismatches").GetInt64());
        var received = r.GetProperty("received_sha256").GetString();
        Assert.Equal(r.GetProperty("source_sha256").GetString(), received);
        var (code, stdout) = source.Finish(TimeSpan.FromSeconds(30));
        Assert.Equal(0, code);
        // the source's own digest of its paused image, in its own words, is the one the second destination received
        Assert.EndsWith($"image digest {received}", stdout.Trim());
    }

    [Fact]
    public void A_bad_plan_or_kill_source_without_a_child_is_refused_before_anything_runs()
    {
        var bad = ChildCli.Run(TimeSpan.FromSeconds(60), null, "migrate", "--inject", "cut-link@nope");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("is not a point of the transfer", bad.Stderr);
        var dest = ChildCli.Run(TimeSpan.FromSeconds(60), null, "migrate", "dest", "--connect", "127.0.0.1:9", "--inject", "kill-source@10");
        Assert.Equal(2, dest.ExitCode);
        Assert.Contains("only where the source is this command's own child", dest.Stderr);
    }
}
