using Faultline.Paging.Decode;
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

    /// <summary>
    /// Does, on the calling thread, the one-time set-up in this process that a <paramref name="mode"/> engine's vCPU
    /// threads would otherwise do when they start: the instruction decoder of the engines that find a fault's address
    /// themselves (exits, bitmap, missing-bitmap, minor-bitmap). For a caller with an idle thread before its vCPUs run.
    /// </summary>
    public static void Prepare(PagingMode mode)
    {
        if (mode is PagingMode.Exits or PagingMode.Bitmap or PagingMode.MissingBitmap or PagingMode.MinorBitmap) FaultAddressDecoder.Prepare();
    }
}
