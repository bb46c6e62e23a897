using Microsoft.Extensions.Logging;

namespace Faultline.Migration;

/// <summary>The migration library's log lines (source-generated: free when the level is off). Faults are counted, never logged.</summary>
internal static partial class MigrationLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "refused a connection: {Reason}; still listening on {Address}")]
    public static partial void PeerRefused(ILogger logger, string reason, string address);
}
