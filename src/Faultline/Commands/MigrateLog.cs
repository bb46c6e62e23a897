using Microsoft.Extensions.Logging;

namespace Faultline.Cli.Commands;

/// <summary>
/// The migration library's log as the CLI shows it: one line each on stderr, <c>faultline: &lt;message&gt;</c>, like its
/// errors (a refused stray peer is a warning, not a failure: the source goes on listening).
/// </summary>
internal sealed class MigrateLog(TextWriter stderr) : ILogger
{
    private readonly Lock _write = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        var line = ErrorReport.Prefix + ErrorReport.OneLine(formatter(state, exception));
        lock (_write)
        {
            stderr.WriteLine(line);
            stderr.Flush();
        }
    }
}
