namespace Faultline.Snapshot;

/// <summary>
/// <c>snapshot restore --handler PATH --handler-restart N</c>: when the page handler dies, start a new one
/// (<c>PROGRAM PREFIX… snapshot serve DIR --socket NEW</c>: this same CLI) and go on, up to <paramref name="Attempts"/> times.
/// <paramref name="Program"/> and <paramref name="Prefix"/> say how to start this CLI again (the CLI knows; the library does not).
/// </summary>
public sealed record HandlerRestart(int Attempts, string Program, IReadOnlyList<string> Prefix)
{
    /// <summary>One line per restart (the CLI writes it to stderr).</summary>
    public Action<string> Log { get; init; } = _ => { };
    /// <summary>How long a new handler may take to listen on its socket.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
