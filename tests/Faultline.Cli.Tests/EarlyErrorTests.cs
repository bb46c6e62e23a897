using System.Net;
using System.Net.Sockets;
using Faultline.Migration.Transport;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>Errors found before the work starts, and said in the user's words with the README's exit codes.</summary>
[Collection(nameof(SerialCollection))]   // counts this process's fds and mappings
public sealed class EarlyErrorTests
{
    public static TheoryData<string[]> BadOutputPaths() => new()
    {
        new[] { "run", "--json", "/proc/nonexistent/x.json" },
        new[] { "probe", "--json", "/nonexistent/dir/probe.json" },
        new[] { "migrate", "--mem", "64M", "--json", "/proc/nonexistent/x.json" },
        new[] { "migrate", "source", "--listen", "127.0.0.1:0", "--json", "/nonexistent/x.json" },
        new[] { "migrate", "dest", "--connect", "127.0.0.1:1", "--json", "/nonexistent/x.json" },
        new[] { "bench", "paging", "--json", "/nonexistent/x.json" },
        new[] { "bench", "paging", "--svg", "/proc/nonexistent/x.svg" },
        new[] { "run", "--json", "/tmp" },                       // a directory
        new[] { "run", "--json", "/proc/fl-cannot-create.json" }, // procfs takes no new files
    };

    [Theory]
    [MemberData(nameof(BadOutputPaths))]
    public void A_bad_output_path_fails_at_parse_time_with_one_line_exit_2_and_nothing_left_open(string[] args)
    {
        CliRunner.Run(args);   // warm up: JIT, Spectre and System.CommandLine statics
        var before = ProcessResources.Now();
        var r = CliRunner.Run(args);
        var after = ProcessResources.Settled(before);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("", r.Stdout);   // no report: nothing ran
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("faultline: --", line);
        Assert.Contains(args[^1], line);
        Assert.True(after.Fds <= before.Fds, $"fds {before.Fds} → {after.Fds}");
        Assert.Equal(before.OurMappings, after.OurMappings);   // no guest RAM, no kvm_run page was ever mapped and left
        after.AssertKernelObjectsWithin(before);                // nor a VM, vCPU or userfaultfd
        Assert.False(File.Exists("/proc/fl-cannot-create.json"));
    }

    [Fact]
    public void Connecting_to_a_closed_loopback_port_says_nothing_listens_there_and_exits_1()
    {
        int port;
        using (var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)s.LocalEndPoint!).Port;
        }   // bound, never listened, closed: nothing listens there now
        var r = CliRunner.Run("migrate", "dest", "--connect", $"127.0.0.1:{port}");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"faultline: nothing listens at 127.0.0.1:{port} (tried for 10 s)", Assert.Single(r.StderrLines));
    }

    [Fact]
    public void A_unix_socket_path_in_a_missing_directory_is_no_such_socket_file_at_once_exit_1()
    {
        var r = CliRunner.Run("migrate", "dest", "--connect", "unix:/nonexistent/sock");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("faultline: no such socket file: /nonexistent/sock (no directory /nonexistent)", Assert.Single(r.StderrLines));
    }

    [Fact]
    public void Connect_errors_are_worded_from_the_socket_error()
    {
        var unix = MigrationAddress.Parse("unix:/run/fl-test.sock");
        var tcp = MigrationAddress.Parse("127.0.0.1:7999");
        static Exception Wrapped(SocketError e) =>   // as the destination throws it: its failure around the transport's
            new MigrationException("outer", new MigrationException("cannot connect", new SocketException((int)e)));
        var tried = TimeSpan.FromSeconds(10);

        var enoent = NetworkErrors.ForConnect(Wrapped(SocketError.AddressNotAvailable), unix, tried)!;
        Assert.Equal("no such socket file: /run/fl-test.sock (tried for 10 s)", enoent.Message);
        Assert.Equal(1, enoent.ExitCode);
        Assert.Equal("nothing listens at 127.0.0.1:7999 (tried for 10 s)", NetworkErrors.ForConnect(Wrapped(SocketError.ConnectionRefused), tcp, tried)!.Message);
        Assert.Equal("nothing listens on the socket file /run/fl-test.sock (tried for 10 s)", NetworkErrors.ForConnect(Wrapped(SocketError.ConnectionRefused), unix, tried)!.Message);
        Assert.Equal("cannot connect to 127.0.0.1:7999: permission denied", NetworkErrors.ForConnect(Wrapped(SocketError.AccessDenied), tcp, tried)!.Message);
        // a connection lost during the migration is not a connect error: it stays the migration's (exit 5)
        Assert.Null(NetworkErrors.ForConnect(Wrapped(SocketError.ConnectionReset), tcp, tried));
        Assert.Null(NetworkErrors.ForConnect(new MigrationException("protocol error"), tcp, tried));
    }

    [KvmFact]
    public void Listening_on_a_port_in_use_fails_before_the_guest_is_built_exit_1()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        var port = ((IPEndPoint)taken.LocalEndPoint!).Port;
        var r = CliRunner.Run("migrate", "source", "--listen", $"127.0.0.1:{port}", "--mem", "64M");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"faultline: cannot listen on 127.0.0.1:{port}: another process listens there (address in use)", Assert.Single(r.StderrLines));
        Assert.Equal("", r.Stdout);   // no "listening on": the source never got that far
    }

    [Fact]
    public void A_unix_listen_path_in_a_missing_directory_is_bad_input()
    {
        var r = CliRunner.Run("migrate", "source", "--listen", "unix:/nonexistent/sock");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("faultline: --listen unix:/nonexistent/sock: no such directory /nonexistent to create the socket in", Assert.Single(r.StderrLines));
    }
}
