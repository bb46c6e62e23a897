using System.Diagnostics;
using System.Globalization;
using Faultline.Migration.Protocol;
using Faultline.Migration.Reporting;
using Spectre.Console;

namespace Faultline.Cli;

/// <summary>
/// The progress line of a migration, naming its phase: starting the source, preparing the destination, connecting,
/// the handshake, post-copy (pages present, pages/s, ETA and the last fault latency that was measured), verifying.
/// Drawn only on a terminal (<see cref="Output.CanShowProgress"/>); elsewhere nothing is drawn and the report alone
/// is printed. The line's text comes from <see cref="Describe"/>, a pure function of what was reported.
/// </summary>
internal sealed class MigrationProgressView
{
    private readonly ProgressTask? _task;
    private readonly object _gate = new();
    private double _lastFaultUs;             // the last latency measured; 0: none yet
    private long _ratePresent, _rateTicks;   // the pages-present sample the rate is taken from
    private double _pagesPerSecond;

    private MigrationProgressView(ProgressTask? task) => _task = task;

    /// <summary>A view that keeps the line's text (<see cref="Text"/>) but draws nothing: output redirected, or a test.</summary>
    internal static MigrationProgressView Detached() => new(null);

    /// <summary>A progress line is on the terminal.</summary>
    public bool IsDrawn => _task is not null;

    /// <summary>What the line says now.</summary>
    public string Text { get; private set; } = "";

    /// <summary>
    /// Runs <paramref name="body"/> under a progress line on <paramref name="human"/> when that is a terminal,
    /// else with a <see cref="Detached"/> view.
    /// </summary>
    public static T Run<T>(TextWriter human, string firstPhase, Func<MigrationProgressView, T> body)
    {
        if (!Output.CanShowProgress(human)) return body(Detached());
        T result = default!;
        Output.Console(human).Progress().AutoClear(true).HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var view = new MigrationProgressView(ctx.AddTask(Markup.Escape(firstPhase), maxValue: 1));
                view.Text = firstPhase;
                result = body(view);
            });
        return result;
    }

    /// <summary>A phase without page counts yet ("starting the source", "preparing 1 GiB on the destination").</summary>
    public void Phase(string text)
    {
        lock (_gate)
        {
            Text = text;
            if (_task is not null) _task.Description = Markup.Escape(text);
        }
    }

    /// <summary>A connection to the source is up (called from the destination's thread as each channel connects).</summary>
    public void Connected(ChannelRole role, string source, bool prepared) => Phase(role == ChannelRole.Main
        ? $"connected to the source at {source}: handshake"
        : prepared
            ? "measuring the link's round trip, checking the source's layout"
            : "measuring the link's round trip, then building the VM from the source's layout");

    /// <summary>The library's progress report (every ~100 ms during post-copy, then once at "complete").</summary>
    public void Report(MigrationProgress p)
    {
        lock (_gate)
        {
            var text = Describe(p, Stopwatch.GetTimestamp(), Stopwatch.Frequency);
            Text = text;
            if (_task is null) return;
            _task.MaxValue = Math.Max(1, p.PagesTotal);
            _task.Value = p.PagesPresent;
            _task.Description = Markup.Escape(text);
        }
    }

    /// <summary>
    /// The line for a report taken at <paramref name="nowTicks"/>. A latency of 0 means "none measured yet": the last
    /// one measured stays on the line (the library's final report carries 0), or "—" before the first fault.
    /// </summary>
    internal string Describe(MigrationProgress p, long nowTicks, long ticksPerSecond)
    {
        if (p.LastFaultLatencyUs > 0) _lastFaultUs = p.LastFaultLatencyUs;
        var fault = _lastFaultUs > 0 ? string.Create(CultureInfo.InvariantCulture, $"{_lastFaultUs:0} µs") : "—";
        if (p.Phase == "complete")
            return $"verifying: every page present ({p.PagesTotal} pages); the guest checks its memory, digests compared; last fault {fault}";
        if (_rateTicks != 0 && nowTicks > _rateTicks)
        {
            var seconds = (double)(nowTicks - _rateTicks) / ticksPerSecond;
            if (seconds > 0 && p.PagesPresent >= _ratePresent) _pagesPerSecond = (p.PagesPresent - _ratePresent) / seconds;
        }
        _ratePresent = p.PagesPresent;
        _rateTicks = nowTicks;
        var left = (long)p.PagesTotal - p.PagesPresent;
        var eta = _pagesPerSecond > 0 && left > 0 ? string.Create(CultureInfo.InvariantCulture, $"ETA {left / _pagesPerSecond:0.0} s") : "ETA —";
        var rate = _pagesPerSecond > 0 ? $"{Output.Count(_pagesPerSecond)} pages/s" : "— pages/s";
        return $"{p.Phase}: {p.PagesPresent}/{p.PagesTotal} pages ({p.PagesDemand} on demand, {p.PagesPushed} pushed), {rate}, {eta}, last fault {fault}";
    }
}
