using Spectre.Console;

namespace Faultline.Cli;

/// <summary>
/// Where commands write, fitted to where it goes. On a terminal: colour (unless <c>NO_COLOR</c> is set or
/// <c>TERM=dumb</c>) and the terminal's width; progress bars only there. Anywhere else (a file, a pipe, a test's
/// StringWriter): plain text without escape codes, and a width no table reaches, so labels never wrap and a SHA-256
/// stays on one line.
/// </summary>
internal static class Output
{
    /// <summary>Wide enough for any row we print: a redirected table keeps each value whole.</summary>
    public const int RedirectedWidth = 4096;

    /// <summary>The writer is this process's stdout or stderr, and that is a terminal.</summary>
    public static bool IsTerminal(TextWriter writer) =>
        (ReferenceEquals(writer, System.Console.Out) && !System.Console.IsOutputRedirected)
        || (ReferenceEquals(writer, System.Console.Error) && !System.Console.IsErrorRedirected);

    /// <summary>TERM=dumb: a terminal that takes no escape codes at all (no colour, no cursor moves).</summary>
    public static bool DumbTerminal => Environment.GetEnvironmentVariable("TERM") == "dumb";

    /// <summary>NO_COLOR (no-color.org): set to anything but the empty string, no colour.</summary>
    public static bool NoColor => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));

    /// <summary>A live progress bar can be drawn on this writer.</summary>
    public static bool CanShowProgress(TextWriter writer) => IsTerminal(writer) && !DumbTerminal;

    public static IAnsiConsole Console(TextWriter writer)
    {
        var terminal = IsTerminal(writer);
        var ansi = terminal && !DumbTerminal;
        var colour = ansi && !NoColor;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = ansi ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = colour ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = ansi ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!terminal) console.Profile.Width = RedirectedWidth;
        return console;
    }

    /// <summary>
    /// The human report's writer: stdout, unless JSON goes there (<c>--json -</c>), then stderr, so a script's
    /// <c>| jq</c> sees one JSON document.
    /// </summary>
    public static TextWriter Human(OutputTarget? json, TextWriter stdout, TextWriter stderr) => json is { IsStdout: true } ? stderr : stdout;

    /// <summary>An invariant-culture number with thousands separators ("4,012,345,678").</summary>
    public static string Count(double v) => v.ToString("#,0", System.Globalization.CultureInfo.InvariantCulture);
}
