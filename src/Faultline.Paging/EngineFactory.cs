using Faultline.Paging.Engines;
using Faultline.Paging.Engines.Bitmap;
using Faultline.Paging.Engines.Exits;
using Faultline.Paging.Engines.Minor;
using Faultline.Paging.Engines.Missing;
using Faultline.Paging.Engines.Populated;

namespace Faultline.Paging;

/// <summary>Builds the engine of a mechanism for a set of options (validated at Start; never swapped silently).</summary>
public static class EngineFactory
{
    public static IPagingEngine Create(PagingOptions options) => options.Mode switch
    {
        PagingMode.None => new PopulatedEngine(options),
        PagingMode.Missing => new MissingEngine(options),
        PagingMode.Minor => new MinorEngine(options),
        PagingMode.Exits => new FaultExitEngine(options),
        PagingMode.Bitmap => new BitmapEngine(options),
        PagingMode.MissingBitmap or PagingMode.MinorBitmap => new ReaderBitmapEngine(options),
        _ => throw new UsageException($"unknown engine {options.Mode}"),
    };
}
