using System.CommandLine;

namespace Faultline.Cli;

/// <summary>
/// The CLI as a function of its arguments and two writers, so tests run it in-process. Parse errors never reach
/// System.CommandLine's own reporting (help dump, multi-line text): the first one becomes a single stderr line and exit
/// code 2. Exceptions from commands are not caught by System.CommandLine either: <see cref="ErrorReport"/> maps them.
/// </summary>
internal static class App
{
    public const string VerboseName = "--verbose";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, stdout, stderr, Program.Commands());

    /// <summary>Runs with a given command set (tests add commands that throw, to check the error mapping).</summary>
    internal static int Run(string[] args, TextWriter stdout, TextWriter stderr, IEnumerable<Command> commands)
    {
        var root = BuildRoot(commands);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && parsed.Action is not { ClearsParseErrors: true })   // --help and --version win over errors
            return ErrorReport.UsageError(stderr, parsed.Errors[0].Message);

        var verbose = parsed.GetValue<bool>(VerboseName);
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        try
        {
            var code = parsed.InvokeAsync(config, Interrupts.Token).GetAwaiter().GetResult();
            if (Interrupts.Signal == 0) return code;
            Interrupts.Report(stderr);
            return Interrupts.ExitCode;
        }
        catch (Exception e) when (Interrupts.Signal != 0)
        {
            // whatever the cancellation surfaced as (a migration "cancelled", a guest stopped): the user's interrupt
            Interrupts.Report(stderr);
            if (verbose) stderr.WriteLine(e.ToString());
            return Interrupts.ExitCode;
        }
        catch (Exception e)
        {
            return ErrorReport.Exception(stderr, e, verbose);
        }
        finally
        {
            stdout.Flush();
            stderr.Flush();
        }
    }

    private static RootCommand BuildRoot(IEnumerable<Command> commands)
    {
        var root = new RootCommand("Faultline: userspace demand paging and post-copy migration of KVM guests.");
        root.Options.Add(new Option<bool>(VerboseName) { Description = "Show stack traces of errors", Recursive = true });
        foreach (var c in commands) root.Subcommands.Add(c);
        var names = string.Join(", ", root.Subcommands.Where(c => !c.Hidden).Select(c => c.Name));
        root.SetAction(pr => ErrorReport.UsageError(pr.InvocationConfiguration.Error, $"no command given: use one of {names} (see --help)"));
        return root;
    }
}
