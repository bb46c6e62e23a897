using System.CommandLine;
using System.Diagnostics;

namespace Faultline.Cli;

/// <summary>A command's stdout and stderr (the invocation's, so tests run it in-process) and its wall clock, if it shows one.</summary>
internal sealed record CliStreams(TextWriter Stdout, TextWriter Stderr, Stopwatch? Wall)
{
    /// <summary>The invocation's stdout and stderr, and the wall clock started when the command began (null: not shown).</summary>
    public static CliStreams Of(ParseResult pr, Stopwatch? wall) => new(pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error, wall);
}
