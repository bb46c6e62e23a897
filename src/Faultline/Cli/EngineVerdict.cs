using Faultline.Paging;

namespace Faultline.Cli;

/// <summary>One paging engine as this host's probe report sees it: whether it can run on a backing, and why (or why not).</summary>
internal sealed record EngineVerdict(PagingMode Mode, bool Supported, string Why);
