namespace Faultline.Cli.Tests;

/// <summary>Bad input: one stderr line starting "faultline:", exit code 2, nothing on stdout, no stack trace.</summary>
public sealed class BadInputTests
{
    [Theory]
    [InlineData("--vcpus", new[] { "run", "--vcpus", "banana" })]
    [InlineData("--mem", new[] { "run", "--mem", "12Q" })]
    [InlineData("--mem", new[] { "run", "--mem", "5G" })]              // above what the guest layout maps (4 GiB)
    [InlineData("--vcpus", new[] { "run", "--vcpus", "0" })]
    [InlineData("--vcpus", new[] { "run", "--vcpus", "-3" })]
    [InlineData("--qwords", new[] { "run", "--qwords", "513" })]
    [InlineData("--guest-mode", new[] { "run", "--guest-mode", "supervisor" })]
    [InlineData("--vcpus", new[] { "run", "--vcpus" })]               // value missing
    [InlineData("--bogus", new[] { "run", "--bogus" })]               // unknown option
    [InlineData("--bogus", new[] { "probe", "--bogus" })]
    [InlineData("--bogus", new[] { "--bogus" })]
    [InlineData("frobnicate", new[] { "frobnicate" })]                // unknown command
    [InlineData("extra", new[] { "probe", "extra" })]                 // stray argument
    [InlineData("--backing", new[] { "migrate", "--backing", "banana" })]
    [InlineData("--backing", new[] { "migrate", "--engine", "missing", "--backing", "shmem" })]
    [InlineData("--backing", new[] { "migrate", "--engine", "minor", "--backing", "anon" })]
    [InlineData("--backing", new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--backing", "banana" })]
    [InlineData("--vcpus", new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--vcpus", "0", "--mem", "4M" })]
    [InlineData("--self-kick", new[] { "migrate", "--self-kick", "5us" })]   // a period that would keep the vCPUs exiting
    [InlineData("--max-postcopy-bandwidth", new[] { "migrate", "--max-postcopy-bandwidth", "fast" })]
    [InlineData("--delivery", new[] { "bench", "apf", "--delivery", "rt" })]
    [InlineData("--max-postcopy-bandwidth", new[] { "migrate", "source", "--listen", "127.0.0.1:0", "--max-postcopy-bandwidth", "4K" })]   // below 1 MiB/s
    [InlineData("a period", new[] { "migrate", "source", "--listen", "127.0.0.1:0", "--self-kick", "fast" })]
    [InlineData("--workload", new[] { "migrate", "--workload", "mixd" })]
    [InlineData("--mem-tasks", new[] { "migrate", "--mem-tasks", "2" })]                          // only the mixed workload has them
    [InlineData("--mem-tasks 5", new[] { "migrate", "--workload", "mixed", "--mem-tasks", "5" })]
    [InlineData("--mem-tasks 0", new[] { "migrate", "source", "--listen", "127.0.0.1:0", "--workload", "mixed", "--mem-tasks", "0" })]
    [InlineData("--protocol", new[] { "migrate", "--protocol", "arm" })]                            // only the mixed workload's guest speaks one
    [InlineData("--protocol takes x86 or arm", new[] { "migrate", "--workload", "mixed", "--protocol", "ppc" })]
    [InlineData("--async-pf", new[] { "migrate", "--async-pf" })]                                   // the generation program never enables it
    [InlineData("--async-pf", new[] { "migrate", "--workload", "mixed", "--async-pf", "sometimes" })]
    [InlineData("needs an engine whose faults exit", new[] { "migrate", "--workload", "mixed", "--engine", "missing", "--async-pf", "always" })]
    [InlineData("--async-pf", new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--async-pf", "auto" })]
    // under migrate this process is the destination: the kill is refused with the two commands that rehearse it
    [InlineData("migrate source --listen ADDR [--rejoin-wait 2], then migrate dest --connect ADDR --inject kill-dest@POINT", new[] { "migrate", "--inject", "kill-dest@30%" })]
    [InlineData("say when, e.g. kill-dest@5000", new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--inject", "kill-dest" })]
    [InlineData("only a delay takes a duration", new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--inject", "kill-dest@10:5ms" })]
    public void Bad_input_is_one_line_and_exit_code_2(string mentioned, string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: ", line);
        Assert.Contains(mentioned, line);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void No_command_is_a_usage_error_naming_the_commands()
    {
        var r = CliRunner.Run();
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: no command given", line);
        Assert.Contains("probe", line);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("run --help")]
    [InlineData("probe -h")]
    public void Help_goes_to_stdout_with_exit_code_0(string commandLine)
    {
        var r = CliRunner.Run(commandLine.Split(' '));
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("Usage:", r.Stdout);
        Assert.Equal("", r.Stderr);
    }

    [Fact]
    public void Run_help_shows_defaults_the_way_they_are_typed()
    {
        var r = CliRunner.Run("run", "--help");
        Assert.Contains("[default: 64M]", r.Stdout);
        Assert.Contains("[default: user]", r.Stdout);
    }
}
