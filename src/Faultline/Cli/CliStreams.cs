using System.Diagnostics;

namespace Faultline.Cli;

/// <summary>A command's stdout and stderr (the invocation's, so tests run it in-process) and its wall clock, if it shows one.</summary>
internal sealed record CliStreams(TextWriter Stdout, TextWriter Stderr, Stopwatch? Wall);
