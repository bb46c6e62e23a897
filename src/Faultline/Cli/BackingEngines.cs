using Faultline.Kvm.Memory;
using Faultline.Paging;

namespace Faultline.Cli;

/// <summary>For one backing: the engine <c>--engine auto</c> would pick, why, and every engine's verdict (fastest first).</summary>
internal sealed record BackingEngines(Backing Backing, PagingMode? Chosen, string Reason, IReadOnlyList<EngineVerdict> Candidates);
