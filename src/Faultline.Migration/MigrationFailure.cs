using Faultline.Migration.Destination;
using Faultline.Migration.Reporting;

namespace Faultline.Migration;

/// <summary>
/// Where a failed migration stood (the report's <c>failure</c> object): the phase it failed in, the one-line cause,
/// where the guest is now, how many pages the destination had, and the rejoins before it gave up.
/// </summary>
public sealed record MigrationFailure(string Phase, string Cause, string GuestState, long PagesPresent, ulong PagesTotal, RejoinRecord[] Rejoins)
{
    /// <summary>The failure as the destination sees it, from its session (null: it failed before it had one).</summary>
    internal static MigrationFailure Of(string cause, DestinationSession? session, bool resumed, IReadOnlyList<RejoinRecord> rejoins)
    {
        var phase = session?.Phase ?? MigrationPhase.Connect;
        var present = session?.Engine.Tracker.PresentCount ?? 0;
        var total = session?.Pages.Pages ?? 0;
        var guest = (phase, resumed) switch
        {
            (< MigrationPhase.HandOver, _) => "running on the source (it was never paused)",
            (_, false) => "on the source: paused there or still running, with every page (the destination never ran it)",
            (MigrationPhase.Complete, _) => "complete on the destination, which stopped it (every page had arrived)",
            _ => $"stopped on the destination with {present} of {total} pages present; the source keeps the guest as paused and every page, unless it is gone too",
        };
        return new MigrationFailure(phase.ToString().ToLowerInvariant(), cause, guest, present, total, [.. rejoins]);
    }

    public void Write(System.Text.Json.Utf8JsonWriter w)
    {
        w.WriteStartObject("failure");
        w.WriteString("phase", Phase);
        w.WriteString("cause", Cause);
        w.WriteString("guest_state", GuestState);
        w.WriteNumber("pages_present", PagesPresent);
        w.WriteNumber("pages_total", PagesTotal);
        w.WriteNumber("reconnects", Rejoins.Length);
        w.WriteEndObject();
    }

    public string ToJson() => JsonText.Write(w =>
    {
        w.WriteStartObject();
        Write(w);
        w.WriteEndObject();
    });
}

/// <summary>A migration that failed, with where it stood (<see cref="Failure"/>); its message is the one-line cause.</summary>
public sealed class MigrationFailedException(string message, MigrationFailure failure, Exception? inner = null) : MigrationException(message, inner)
{
    public MigrationFailure Failure { get; } = failure;
}
