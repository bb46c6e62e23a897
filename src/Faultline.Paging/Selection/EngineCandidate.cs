namespace Faultline.Paging.Selection;

/// <summary>One engine as the selector saw it on this host: whether it can run here, and why (or why not).</summary>
public sealed record EngineCandidate(PagingMode Mode, bool Supported, string Why);
