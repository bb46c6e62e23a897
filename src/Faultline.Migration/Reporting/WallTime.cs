namespace Faultline.Migration.Reporting;

/// <summary>
/// The user's wait for one local migration, measured by the CLI from the command's start to the report, and its parts
/// in the order they happen: the source process starting (its VM, guest and warm-up pass), the destination's
/// preparation, connecting and handing over (handshake, round trip, layout, pause, state), post-copy (pause → every
/// page present), and the rest (the guest's verification pass, the summary, the source's exit, a baseline if asked).
/// The parts add up to <see cref="TotalMs"/>: the rest is what the others leave.
/// </summary>
public sealed record WallTime(double TotalMs, double SourceStartMs, double PrepareMs, double ConnectAndHandOverMs, double PostcopyMs)
{
    public double RestMs => TotalMs - SourceStartMs - PrepareMs - ConnectAndHandOverMs - PostcopyMs;

    public static WallTime Of(double totalMs, double sourceStartMs, MigrationReport r) =>
        new(totalMs, sourceStartMs, r.PrepareMs ?? 0, r.SetupMs, r.PostcopyMs);
}
