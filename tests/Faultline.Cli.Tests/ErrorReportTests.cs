using System.CommandLine;

namespace Faultline.Cli.Tests;

/// <summary>What a command throws becomes one stderr line and an exit code; --verbose adds the stack trace.</summary>
public sealed class ErrorReportTests
{
    private static Command Throwing(Exception e)
    {
        var c = new Command("boom", "throws");
        c.SetAction(new Func<ParseResult, int>(_ => throw e));
        return c;
    }

    [Fact]
    public void A_missing_device_is_one_line_naming_it_with_the_exceptions_exit_code()
    {
        var e = new HostSupportException("/dev/kvm does not exist: load the kvm module (kvm_intel/kvm_amd) or run on a host with KVM");
        var r = CliRunner.RunWith([Throwing(e)], "boom");
        Assert.Equal(e.ExitCode, r.ExitCode);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Equal("faultline: " + e.Message, Assert.Single(r.StderrLines));
    }

    [Fact]
    public void A_faultline_exception_from_a_vcpu_thread_keeps_its_message_and_code()
    {
        var r = CliRunner.RunWith([Throwing(new AggregateException(new GuestException("vCPU 0: guest exception #PF at rip 0x40000")))], "boom");
        Assert.Equal(4, r.ExitCode);
        Assert.Equal("faultline: vCPU 0: guest exception #PF at rip 0x40000", Assert.Single(r.StderrLines));
    }

    [Fact]
    public void Any_other_exception_is_an_internal_error_with_exit_code_70()
    {
        var r = CliRunner.RunWith([Throwing(new InvalidOperationException("the\nsky fell"))], "boom");
        Assert.Equal(70, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: internal error: ", line);
        Assert.Contains("the sky fell", line);
        Assert.EndsWith("(rerun with --verbose)", line);
    }

    [Fact]
    public void Verbose_adds_the_stack_trace()
    {
        var r = CliRunner.RunWith([Throwing(new InvalidOperationException("the sky fell"))], "boom", "--verbose");
        Assert.Equal(70, r.ExitCode);
        Assert.StartsWith("faultline: internal error: ", r.StderrLines[0]);
        Assert.True(r.StderrLines.Length > 2, r.Stderr);
        Assert.Contains("System.InvalidOperationException: the sky fell", r.Stderr);
    }
}
