using System.Globalization;
using System.Text.Json;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

/// <summary>
/// <c>snapshot restore --handler PATH --handler-restart N</c> and <c>snapshot serve</c> with real processes: a handler
/// SIGKILLed mid-restore is replaced and the guest verifies its memory; with the restarts used up, one line, exit 5 and
/// nothing left behind; a handler stopped (SIGSTOP: alive, answering nothing) noticed after --handler-timeout;
/// several restoring processes served by one <c>serve</c>.
/// </summary>
public sealed class HandlerRestartTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(120);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"fl-hrestart-{Guid.NewGuid():N}");
    private readonly string _socket = Path.Combine(Path.GetTempPath(), $"fl-hr-{Guid.NewGuid().ToString("N")[..12]}.sock");

    /// <summary>Saves a 2-vCPU snapshot of <paramref name="mem"/>; its data page count.</summary>
    private long Save(string mem)
    {
        var save = CliRunner.Run("snapshot", "save", _dir, "--vcpus", "2", "--mem", mem, "--json", "-");
        Assert.True(save.ExitCode == 0, save.ToString());
        using var j = JsonDocument.Parse(save.Stdout);
        return j.RootElement.GetProperty("data_pages").GetInt64();
    }

    private LineProcess Serve()
    {
        var serve = LineProcess.Start("snapshot", "serve", _dir, "--socket", _socket);
        serve.WaitForLine(l => l.Contains("(Ctrl-C stops)", StringComparison.Ordinal), Wait);
        return serve;
    }

    /// <summary>A restore through <paramref name="serve"/> (JSON on stdout), once the handler has its userfaultfd: its vCPUs start now.</summary>
    private LineProcess RestoreServedBy(LineProcess serve, params string[] options)
    {
        var restore = LineProcess.Start(["snapshot", "restore", _dir, "--handler", _socket, .. options, "--json", "-"]);
        try { serve.WaitForLine(l => l.StartsWith(ServingLine(restore.Pid), StringComparison.Ordinal), Wait); }
        catch
        {
            restore.Dispose();
            throw;
        }
        return restore;
    }

    private static string ServingLine(int pid) => $"faultline serve: serving pid {pid} ";

    /// <summary>Processes (other than this one) whose command line holds <paramref name="text"/>.</summary>
    private static int[] ProcessesWith(string text)
    {
        var found = new List<int>();
        foreach (var d in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid == Environment.ProcessId) continue;
            try { if (File.ReadAllText(Path.Combine(d, "cmdline")).Contains(text, StringComparison.Ordinal)) found.Add(pid); }
            catch (IOException) { }   // it ended while we looked
            catch (UnauthorizedAccessException) { }
        }
        return [.. found];
    }

    /// <summary>What a restore started, by the socket names it gives its handlers (faultline-handler-PID-…).</summary>
    private static void AssertNothingLeftOf(int restorePid)
    {
        var mark = $"faultline-handler-{restorePid}-";
        int[] left = [];
        for (var i = 0; i < 100 && (left = ProcessesWith(mark)).Length > 0; i++) Thread.Sleep(20);
        Assert.True(left.Length == 0, $"handler process(es) {string.Join(", ", left)} outlived the restore");
        Assert.Empty(Directory.GetFiles(Path.GetTempPath(), mark + "*"));
    }

    [KvmFact]
    public void A_handler_killed_mid_restore_is_replaced_and_the_guest_verifies_every_page()
    {
        Save("128M");
        using var serve = Serve();
        using var restore = LineProcess.Start("snapshot", "restore", _dir, "--handler", _socket, "--handler-restart", "2", "--json", "-");
        serve.WaitForLine(l => l.StartsWith(ServingLine(restore.Pid), StringComparison.Ordinal), Wait);   // it has the userfaultfd: the vCPUs start now
        Thread.Sleep(50);   // some pages served (the whole restore through a handler takes about 0.6 s at 128 MiB)
        serve.Kill();
        var r = restore.Finish(Wait);
        Assert.True(r.ExitCode == 0, r.ToString());
        using var j = JsonDocument.Parse(r.Stdout);
        var restarts = j.RootElement.GetProperty("handler_restarts").GetInt32();
        Assert.True(restarts >= 1, $"no restart: the handler was killed after the guest had finished\n{r}");
        Assert.Equal(0, j.RootElement.GetProperty("guest_mismatches").GetInt64());
        var lines = r.StderrLines.Where(l => l.StartsWith("faultline restore: handler restart ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(restarts, lines.Length);   // one line per restart
        Assert.Contains($"the page handler at {_socket} went away", lines[0]);
        AssertNothingLeftOf(restore.Pid);
    }

    [KvmFact]
    public void With_the_restarts_used_up_the_restore_ends_with_one_line_exit_5_and_no_handler_left()
    {
        Save("128M");
        using var serve = Serve();
        using var restore = LineProcess.Start("snapshot", "restore", _dir, "--handler", _socket, "--handler-restart", "1", "--json", "-");
        serve.WaitForLine(l => l.StartsWith(ServingLine(restore.Pid), StringComparison.Ordinal), Wait);
        serve.Kill();
        // the restore's own handler: killed as soon as the restore says it took over
        var line = restore.WaitForLine(l => l.StartsWith("faultline restore: handler restart 1 of 1", StringComparison.Ordinal), Wait);
        var pid = line[(line.IndexOf(" pid ", StringComparison.Ordinal) + 5)..].Split(' ')[0];
        using (var handler = System.Diagnostics.Process.GetProcessById(int.Parse(pid, CultureInfo.InvariantCulture))) handler.Kill();
        var r = restore.Finish(Wait);
        Assert.True(r.ExitCode == 5, r.ToString());
        Assert.Equal("", r.Stdout);
        var error = Assert.Single(r.StderrLines, l => l.StartsWith("faultline: ", StringComparison.Ordinal));
        Assert.Contains("went away during the restore, after 1 handler restart(s): the VM was stopped", error);
        Assert.Equal(error, r.StderrLines[^1]);
        AssertNothingLeftOf(restore.Pid);
    }

    [KvmFact]
    public void A_users_handler_that_stops_answering_ends_the_restore_with_one_line_after_the_handler_timeout()
    {
        Save("128M");
        using var serve = Serve();
        using var restore = RestoreServedBy(serve, "--handler-restart", "2", "--handler-timeout", "1");
        serve.Signal("STOP");   // alive, its socket open, answering nothing
        try
        {
            var r = restore.Finish(Wait);
            Assert.True(r.ExitCode == 5, r.ToString());
            var error = Assert.Single(r.StderrLines, l => l.StartsWith("faultline: ", StringComparison.Ordinal));
            Assert.Contains($"the page handler at {_socket} is alive but left vCPU", error);
            Assert.Contains("(--handler-timeout 1 s): the VM was stopped", error);
            Assert.DoesNotContain(r.StderrLines, l => l.Contains("handler restart", StringComparison.Ordinal));   // the user's handler is not replaced
            AssertNothingLeftOf(restore.Pid);
        }
        finally { serve.Signal("CONT"); }
    }

    [KvmFact]
    public void A_handler_the_restore_started_that_stops_answering_is_killed_and_replaced()
    {
        Save("128M");
        using var serve = Serve();
        using var restore = RestoreServedBy(serve, "--handler-restart", "2", "--handler-timeout", "1");
        serve.Kill();
        var line = restore.WaitForLine(l => l.StartsWith("faultline restore: handler restart 1 of 2", StringComparison.Ordinal), Wait);
        var pid = int.Parse(line[(line.IndexOf(" pid ", StringComparison.Ordinal) + 5)..].Split(' ')[0], CultureInfo.InvariantCulture);
        ChildCli.Signal(pid, "STOP");
        var r = restore.Finish(Wait);
        Assert.True(r.ExitCode == 0, r.ToString());
        using var j = JsonDocument.Parse(r.Stdout);
        Assert.Equal(2, j.RootElement.GetProperty("handler_restarts").GetInt32());
        Assert.Equal(0, j.RootElement.GetProperty("guest_mismatches").GetInt64());
        var second = Assert.Single(r.StderrLines, l => l.StartsWith("faultline restore: handler restart 2 of 2", StringComparison.Ordinal));
        Assert.Contains($"pid {pid} ", line);
        Assert.Contains("stopped answering", second);
        Assert.False(ProcessesWith($"faultline-handler-{restore.Pid}-1-").Length > 0, "the stopped handler was not killed");
        AssertNothingLeftOf(restore.Pid);
    }

    [KvmFact]
    public void Three_restoring_processes_served_by_one_handler_each_verify_their_memory()
    {
        var dataPages = Save("32M");
        using var serve = Serve();
        var restores = Enumerable.Range(0, 3).Select(_ => LineProcess.Start("snapshot", "restore", _dir, "--handler", _socket, "--json", "-")).ToArray();
        try
        {
            foreach (var restore in restores)
            {
                var r = restore.Finish(Wait);
                Assert.True(r.ExitCode == 0, r.ToString());
                using var j = JsonDocument.Parse(r.Stdout);
                Assert.Equal(0, j.RootElement.GetProperty("guest_mismatches").GetInt64());
                Assert.Equal(0, j.RootElement.GetProperty("handler_restarts").GetInt32());
            }
            foreach (var restore in restores)
            {
                serve.WaitForLine(l => l.StartsWith(ServingLine(restore.Pid), StringComparison.Ordinal), Wait);   // SO_PEERCRED: each its own peer
                serve.WaitForLine(l => l == $"faultline serve: pid {restore.Pid} disconnected", Wait);
            }
        }
        finally { foreach (var restore in restores) restore.Dispose(); }
        serve.Signal("INT");
        var s = serve.Finish(Wait);
        Assert.True(s.ExitCode == 130, s.ToString());   // interrupted, as Ctrl-C ends it
        Assert.Contains($"served 3 connection(s): {3 * dataPages} pages read", s.Stdout);   // every data page read once for each VM
        Assert.DoesNotContain(s.StderrLines, l => l.Contains("refused", StringComparison.Ordinal) || l.Contains("stopped serving", StringComparison.Ordinal));
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        try { File.Delete(_socket); } catch (IOException) { }
    }
}
