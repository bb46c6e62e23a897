using Faultline.Paging.Engines;

namespace Faultline.Paging;

/// <summary>Builds the engine for a set of options (EngineSelector's role: the options are validated, never swapped silently).</summary>
public static class EngineFactory
{
    public static IPagingEngine Create(PagingOptions options) => new DemandPagingEngine(options);
}
