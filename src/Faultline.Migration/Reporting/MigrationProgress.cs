namespace Faultline.Migration.Reporting;

/// <summary>A live view of the destination, reported every ~100 ms during post-copy (the CLI draws it).</summary>
public readonly record struct MigrationProgress(string Phase, long PagesPresent, ulong PagesTotal, long PagesDemand, long PagesPushed, double LastFaultLatencyUs);
