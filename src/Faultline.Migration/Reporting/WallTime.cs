namespace Faultline.Migration.Reporting;

/// <summary>
/// The user's wait for one local migration, measured by the CLI from the command's start to the report, and its parts
/// in the order they happen: start-up (the source process starting: its VM, guest and warm-up pass, while the
/// destination prepares its VM, memory and threads side by side; the part ends when both are ready), connecting and
/// handing over (handshake, round trip, layout, pause, state), post-copy (pause → every page present), and the rest
/// (the guest's verification pass, the summary, the source's exit, a baseline if asked). The parts add up to
/// <see cref="TotalMs"/>: the rest is what the others leave. <see cref="PrepareMs"/> is inside the start-up.
/// </summary>
public sealed record WallTime(double TotalMs, double StartupMs, double PrepareMs, double ConnectAndHandOverMs, double PostcopyMs)
{
    public double RestMs => TotalMs - StartupMs - ConnectAndHandOverMs - PostcopyMs;

    public static WallTime Of(double totalMs, double startupMs, MigrationReport r) =>
        new(totalMs, startupMs, r.PrepareMs ?? 0, r.SetupMs, r.PostcopyMs);
}
