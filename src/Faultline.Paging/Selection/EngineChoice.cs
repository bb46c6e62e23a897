namespace Faultline.Paging.Selection;

/// <summary>The engine <c>--engine auto</c> picks for a backing, the reason, and every candidate with its verdict (best first).</summary>
public sealed record EngineChoice(PagingMode Chosen, string Reason, IReadOnlyList<EngineCandidate> Candidates);
