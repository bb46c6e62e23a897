using System.CommandLine;
using System.Globalization;
using Faultline.Kvm.Memory;
using Faultline.Migration.Source;
using Faultline.Paging;
using Faultline.Paging.AsyncPf;
using Faultline.Migration;
using Faultline.Paging.Selection;
using Faultline.Guest;

namespace Faultline.Cli.Commands;

/// <summary>`migrate`'s options, their parsing (delays, engine, backing) and the environment knobs only the CLI reads.</summary>
internal static class MigrateOptions
{
    internal static Option<int> Vcpus() => new("--vcpus") { Description = "vCPUs of the guest", DefaultValueFactory = _ => 2 };

    internal static Option<ByteSize> Mem() => GuestSizes.Ram("--mem", "Guest RAM (e.g. 256M, 2G)", 256 * ValueParsers.MiB);

    internal static Option<string> Engine() => new("--engine")
    {
        Description = "Paging engine on the destination: auto (the fastest this host supports, with why), missing, minor (shmem), exits, bitmap", DefaultValueFactory = _ => "auto",
    };

    internal static Option<string> Delay() => new("--link-delay")
    {
        Description = "One-way delay added to every frame in each direction, emulated in user space (this kernel has no netem), e.g. 30us",
        DefaultValueFactory = _ => "0",
    };

    internal static Option<int> PushRun() => new("--push-run")
    {
        Description = "Most pages per push frame: consecutive pages travel as one run, installed with one ioctl (1: a frame and an ioctl per page)",
        DefaultValueFactory = _ => Faultline.Migration.Protocol.Wire.MaxRunPages,
    };

    internal static Option<ByteSize?> PostcopyBandwidth() => CliOptions.OptionalSize("--max-postcopy-bandwidth",
        "Most bytes per second the background push sends after the pause (e.g. 500M: 500 MiB/s), as QEMU's max-postcopy-bandwidth; "
        + "demanded pages are never held back. Default: as fast as the link and the CPUs allow", min: ValueParsers.MiB);

    /// <summary>The source's push settings that <c>migrate</c> hands to its source child.</summary>
    internal sealed record SourcePush(int RunPages, TimeSpan SelfKick, ByteSize? Bandwidth);

    internal static Option<string> BackingOption() => new("--backing")
    {
        Description = "Destination guest RAM: anon (UFFDIO_COPY allocates each page as it lands) or shmem (memfd, page cache allocated before the migration, pages installed with UFFDIO_CONTINUE); auto: shmem for minor and exits, anon otherwise",
        DefaultValueFactory = _ => "auto",
    };

    internal static Option<string> SelfKick() => new("--self-kick")
    {
        Description = "Source: while a pause is imminent, each vCPU thread arms a timer on its own CPU that kicks it out of KVM_RUN this often "
            + "(a cross-CPU kick can wait for a host tick); 0: only the cross-CPU kick",
        DefaultValueFactory = _ => $"{SourceOptions.DefaultSelfKickPeriod.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)}us",
    };

    internal static Option<OutputTarget?> Json() => CliOptions.OutputFile("--json", "Also write the report as JSON to FILE; - (or --json alone): to stdout, the report table then to stderr");

    internal static Option<string?> Inject() => new("--inject")
    {
        Description = "Rehearse failures during the post-copy: cut-link[@POINT] (both channels cut; the destination rejoins), delay[@POINT][:DURATION] "
            + "(the link held, 500ms unless said, at most 5s), corrupt[@POINT] (the next page frame damaged: its checksum catches it, its pages come again), "
            + "kill-source@POINT (SIGKILL to the source: migrate only), kill-dest@POINT (SIGKILL to this destination: migrate dest only; the source keeps the paused guest for the next one); "
            + "POINT is pages received (5000) or a share of the guest's pages (40%), a random point when not said (a kill must say it); comma-separated",
        HelpName = "SPEC",
    };

    internal static Option<int> RecoverTimeout() => new("--recover-timeout")
    {
        Description = "Destination: seconds a connection lost in post-copy is tried again (the guest keeps running) before the migration fails; 0: fail at once",
        DefaultValueFactory = _ => (int)Faultline.Migration.Destination.DestinationOptions.DefaultRecoverTimeout.TotalSeconds, HelpName = "SECONDS",
    };

    internal static Option<int> RejoinWait() => new("--rejoin-wait")
    {
        Description = "Source: seconds to wait for the destination to rejoin after the connection is lost in post-copy (every page kept, no other destination taken); 0: do not wait",
        DefaultValueFactory = _ => (int)SourceOptions.DefaultRejoinTimeout.TotalSeconds, HelpName = "SECONDS",
    };

    /// <summary>--recover-timeout / --rejoin-wait: 0..3600 seconds.</summary>
    internal static TimeSpan Seconds(ParseResult pr, Option<int> option)
    {
        var v = pr.GetValue(option);
        if (v is < 0 or > 3600) throw new UsageException($"{option.Name} {v}: use 0..3600 seconds");
        return TimeSpan.FromSeconds(v);
    }

    /// <summary>
    /// Under <c>migrate</c> this process is the destination and the one that reports: killed, nothing would be left to
    /// report, and the source child could not tell its death from a cut link (it would first wait --rejoin-wait for it).
    /// </summary>
    internal const string KillDestUnderMigrate = "--inject kill-dest: under migrate the destination is this process, which reports; "
        + "rehearse it with the two commands: migrate source --listen ADDR [--rejoin-wait 2], then migrate dest --connect ADDR --inject kill-dest@POINT and a second migrate dest";

    /// <summary>--inject: the plan, or none.</summary>
    internal static InjectionPlan InjectOf(ParseResult pr, Option<string?> option) =>
        pr.GetValue(option) is { } spec ? InjectionPlan.Parse(spec) : InjectionPlan.None;

    internal static Option<bool> Netns() => new("--netns")
    {
        Description = "Run the two ends in two network namespaces joined by a veth pair (set up and torn down with ip); default: loopback",
    };

    /// <summary>FAULTLINE_SLICE_US: the EEVDF slice of the migration's normal threads and vCPUs (an experiment knob).</summary>
    internal static TimeSpan SliceSetting() =>
        double.TryParse(Environment.GetEnvironmentVariable("FAULTLINE_SLICE_US"), CultureInfo.InvariantCulture, out var us) ? TimeSpan.FromMicroseconds(us) : TimeSpan.Zero;

    /// <summary>FAULTLINE_MIGRATION_TRACE=1: both ends stamp the first demands hop by hop.</summary>
    internal static bool TraceSetting() => Environment.GetEnvironmentVariable("FAULTLINE_MIGRATION_TRACE") == "1";

    /// <summary>FAULTLINE_RT=0 turns SCHED_FIFO off for the demand path's carriers (the library never reads the environment).</summary>
    internal static bool? RealTimeSetting() => Environment.GetEnvironmentVariable("FAULTLINE_RT")?.Trim() == "0" ? false : null;

    /// <summary>--backing: auto is shmem for minor (it needs a page cache) and exits (faster post-copy), anon otherwise.</summary>
    internal static Backing BackingFor(PagingMode engine, string? word) => (word ?? "auto").Trim().ToLowerInvariant() switch
    {
        // exits on shmem: the page cache is allocated while the destination is prepared, so a landing page costs a
        // copy and a UFFDIO_CONTINUE, not a page allocation inside the post-copy (measured: docs/migration.md)
        "auto" => engine is PagingMode.Minor or PagingMode.MinorBitmap or PagingMode.Exits ? Backing.Shmem : Backing.Anonymous,
        "anon" => engine is PagingMode.Minor or PagingMode.MinorBitmap
            ? throw new UsageException($"--backing anon: the {engine.Name()} engine needs shmem")
            : Backing.Anonymous,
        "shmem" => engine is PagingMode.Missing or PagingMode.MissingBitmap
            ? throw new UsageException($"--backing shmem: the {engine.Name()} engine needs anon memory (use minor on shmem)")
            : Backing.Shmem,
        var w => throw new UsageException($"--backing {w}: use auto, anon or shmem"),
    };

    internal static TimeSpan ParseDelay(string s) => ParseDuration(s, "--link-delay", "a delay");

    internal static TimeSpan ParseSelfKick(string s)
    {
        var period = ParseDuration(s, "--self-kick", "a period");
        if (period != TimeSpan.Zero && period < MigrationSource.MinSelfKickPeriod)
            throw new UsageException($"--self-kick {s}: use 0 (off) or at least {MigrationSource.MinSelfKickPeriod.TotalMicroseconds:0}us");
        return period;
    }

    /// <summary>0, or a number with ns, us (µs) or ms, at most a second: 30us, 0.5ms.</summary>
    internal static TimeSpan ParseDuration(string s, string option, string what)
    {
        var t = s.Trim();
        var i = 0;
        while (i < t.Length && (char.IsAsciiDigit(t[i]) || t[i] == '.')) i++;
        if (i == 0 || !double.TryParse(t[..i], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || v < 0)
            throw new UsageException($"'{s}' is not {what} (e.g. 30us, 0.5ms, 0)");
        var us = t[i..] switch
        {
            "" when v == 0 => 0, "ns" => v / 1000, "us" or "µs" => v, "ms" => v * 1000,
            _ => throw new UsageException($"'{s}' is not {what} (e.g. 30us, 0.5ms, 0)"),
        };
        if (us > 1_000_000) throw new UsageException($"{option} {s} is more than a second");
        return TimeSpan.FromMicroseconds(us);
    }

    internal static PagingMode ParseEngine(string s) => s.Trim().ToLowerInvariant() switch
    {
        "missing" => PagingMode.Missing, "minor" => PagingMode.Minor, "exits" => PagingMode.Exits, "bitmap" => PagingMode.Bitmap,
        _ => throw new UsageException($"--engine {s}: use auto, missing, minor, exits or bitmap"),
    };

    /// <summary>--engine: a named engine (checked against this host), or auto: the selector's pick for the backing, with its reason.</summary>
    internal static (PagingMode Engine, string Reason) ChooseEngine(string word, string? backingWord)
    {
        var caps = HostCapabilities.Detect();
        if (word.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            var b = (backingWord ?? "auto").Trim().ToLowerInvariant() is "anon" or "anonymous" ? Backing.Anonymous : Backing.Shmem;
            var c = EngineSelector.Evaluate(caps, b);
            return (c.Chosen, $"auto: {c.Reason}");
        }
        var e = ParseEngine(word);
        EngineSelector.Check(e, caps, BackingFor(e, backingWord));
        return (e, "chosen with --engine");
    }

    /// <summary>--workload: a generation order, or mixed (null): the task kernel with a CPU task and memory tasks.</summary>
    internal static Option<Choice<AccessOrder?>> WorkloadOption() =>
        CliOptions.Choice<AccessOrder?>(CliOptions.WorkloadName,
            "The guest: generation passes in sequential (the push runs ahead of it), random (uniform over its memory) or hotset (a drifting hot set) order; "
            + "or mixed: a CPU task and --mem-tasks memory tasks per vCPU under a small guest kernel that enables async page faults",
            ("sequential", AccessOrder.Sequential), ("random", AccessOrder.Random), ("hotset", AccessOrder.Hotset), ("mixed", null));

    internal static Option<string?> AsyncPfOption() => new("--async-pf")
    {
        Description = "--workload mixed: answer a fault the guest can take asynchronously with \"page not present\", then \"page ready\": "
            + "auto (where the expected wait beats the measured notification cost; --async-pf alone), always, never. Default: auto on an engine whose faults exit, else never",
        HelpName = "auto|always|never", Arity = ArgumentArity.ZeroOrOne,
    };

    /// <summary>--async-pf for the destination: given, it must fit the workload and the engine; not given, auto where the engine can, else never.</summary>
    internal static AsyncPfMode AsyncPfModeOf(ParseResult pr, Option<string?> option, PagingMode engine, MixedWorkload? mixed)
    {
        var given = pr.GetResult(option) is { Implicit: false };
        if (!given) return mixed is not null && engine.SupportsAsyncPf() ? AsyncPfMode.Auto : AsyncPfMode.Never;
        var mode = pr.GetValue(option) is { } word ? AsyncPfOptions.Parse(word) : AsyncPfMode.Auto;
        if (mode == AsyncPfMode.Never) return mode;
        if (mixed is null) throw new UsageException("--async-pf: only the mixed workload's guest enables async page faults (use --workload mixed)");
        if (!engine.SupportsAsyncPf()) throw new UsageException($"--async-pf {mode.ToString().ToLowerInvariant()} needs an engine whose faults exit (exits, bitmap), not {engine.Name()}");
        return mode;
    }
}
