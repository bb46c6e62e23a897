using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>`migrate --inject`: a cut link is rejoined and the migration completes; a killed source ends it with one line and a failure object.</summary>
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
