using Microsoft.Extensions.Logging;

namespace Faultline.Migration.Tests;

/// <summary>Keeps every log line a migration end writes, for the tests to read.</summary>
internal sealed class ListLogger : ILogger
{
    private readonly Lock _lock = new();
    private readonly List<string> _lines = [];

    public string[] Lines { get { lock (_lock) return [.. _lines]; } }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lock) _lines.Add(formatter(state, exception));
    }
}
