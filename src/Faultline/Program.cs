using System.CommandLine;
using Faultline.Cli.Commands;

namespace Faultline.Cli;

internal static class Program
{
    /// <summary>Every command of the CLI: one line each.</summary>
    internal static IEnumerable<Command> Commands() =>
    [
        ProbeCommand.Create(),
        RunCommand.Create(),
        BenchCommand.Create(),
        MigrateCommand.Create(),
        SnapshotCommand.Create(),
    ];

    private static int Main(string[] args)
    {
        Interrupts.Install();
        return App.Run(args, Console.Out, Console.Error);
    }
}
