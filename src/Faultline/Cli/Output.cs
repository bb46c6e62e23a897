using Spectre.Console;

namespace Faultline.Cli;

/// <summary>Where commands write: a Spectre console over the invocation's stdout (plain when it is not a terminal).</summary>
internal static class Output
{
    public static IAnsiConsole Console(TextWriter writer)
    {
        var terminal = ReferenceEquals(writer, System.Console.Out) && !System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!terminal) console.Profile.Width = 132;   // redirected: no terminal width to follow, keep tables on one line
        return console;
    }

    /// <summary>An invariant-culture number with thousands separators ("4,012,345,678").</summary>
    public static string Count(double v) => v.ToString("#,0", System.Globalization.CultureInfo.InvariantCulture);
}
