namespace Faultline.Migration.Source;

/// <summary>What the source did during one migration.</summary>
public sealed record SourceResult(
    ulong PagesTotal, ulong PagesDemand, ulong PagesPushed, ulong PagesZero, ulong DemandRequests, ulong DemandAlreadySent,
    long BytesSent, long BytesReceived, string SourceSha256, double PauseMs, double PauseToStateSentMs);
