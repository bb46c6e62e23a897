using Microsoft.Extensions.Logging;

namespace Faultline.Migration;

/// <summary>The migration library's log lines (source-generated: free when the level is off). Faults are counted, never logged.</summary>
internal static partial class MigrationLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "refused a connection: {Reason}; still listening on {Address}")]
    public static partial void PeerRefused(ILogger logger, string reason, string address);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "link lost in post-copy: {Reason}; waiting up to {Seconds} s for the destination to rejoin (every page kept)")]
    public static partial void LinkLost(ILogger logger, string reason, double seconds);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "the destination rejoined from {Peer}: {Pages} pages it did not get are sent again")]
    public static partial void Rejoined(ILogger logger, string peer, long pages);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "link lost in post-copy: {Reason}; rejoining the source (up to {Seconds} s)")]
    public static partial void Rejoining(ILogger logger, string reason, double seconds);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "rejoined the source after {Ms} ms (attempt {Attempt}): {Pages} pages in flight asked for again")]
    public static partial void RejoinedSource(ILogger logger, double ms, int attempt, long pages);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "injected {What} at {Pages} pages received")]
    public static partial void Injected(ILogger logger, string what, long pages);
}
