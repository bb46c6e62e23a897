using System.Reflection;

namespace Faultline.Cli;

/// <summary>
/// Turns what went wrong into the CLI's one stderr line and exit code (dotnet/sdk's GracefulException):
/// a parse error → 2; a <see cref="FaultlineException"/> → its message and <see cref="FaultlineException.ExitCode"/>;
/// anything else → "internal error … (rerun with --verbose)" and 70. --verbose adds the stack trace.
/// </summary>
internal static class ErrorReport
{
    public const int Usage = 2;
    public const int Internal = 70;   // EX_SOFTWARE (sysexits.h)
    public const string Prefix = "faultline: ";

    public static int UsageError(TextWriter stderr, string message)
    {
        stderr.WriteLine(Prefix + OneLine(message));
        return Usage;
    }

    public static int Exception(TextWriter stderr, Exception e, bool verbose)
    {
        e = Unwrap(e);
        int code;
        if (e is FaultlineException f)
        {
            stderr.WriteLine(Prefix + OneLine(f.Message));
            code = f.ExitCode;
        }
        else if (e is OperationCanceledException)
        {
            stderr.WriteLine(Prefix + "cancelled");
            code = 130;
        }
        else
        {
            stderr.WriteLine(Prefix + "internal error: " + OneLine($"{e.GetType().Name}: {e.Message}") + (verbose ? "" : " (rerun with --verbose)"));
            code = Internal;
        }
        if (verbose) stderr.WriteLine(e.ToString());
        return code;
    }

    private static Exception Unwrap(Exception e)
    {
        while (true)
        {
            switch (e)
            {
                case AggregateException { InnerExceptions.Count: 1 } a: e = a.InnerExceptions[0]; continue;
                case TargetInvocationException { InnerException: { } i }: e = i; continue;
                default: return e;
            }
        }
    }

    /// <summary>Collapses a message onto one line.</summary>
    public static string OneLine(string message)
    {
        var lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return string.Join(" ", lines);
    }
}
