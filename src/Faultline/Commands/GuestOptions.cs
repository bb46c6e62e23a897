using System.CommandLine;
using System.Globalization;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Migration;
using Faultline.Paging.AsyncPf;

namespace Faultline.Cli.Commands;

/// <summary>
/// What a migrated guest runs, the options both ends of a migration share: --workload (a generation order, or mixed),
/// --mem-tasks and --protocol (the mixed workload's memory tasks and its async-PF guest ABI).
/// </summary>
internal sealed class GuestOptions
{
    private readonly Option<Choice<AccessOrder?>> _workload = MigrateOptions.WorkloadOption();
    private readonly Option<int> _memTasks = new("--mem-tasks")
    {
        Description = "--workload mixed: memory tasks per vCPU (1..4), each checking its share of the vCPU's pages in passes", DefaultValueFactory = _ => 1,
    };
    private readonly Option<string> _protocol = new("--protocol")
    {
        Description = "--workload mixed: the guest's async-PF protocol: x86 (PV async PF: MSRs, #PF with the token, a ready vector) "
            + "or arm (seed 003: SMCCC calls, an SDEI event for \"not present\", a PPI for \"page ready\"); both ends must agree",
        HelpName = "x86|arm", DefaultValueFactory = _ => "x86",
    };

    public IEnumerable<Option> All => [_workload, _memTasks, _protocol];

    /// <summary>The guest the options describe; a mixed-workload option given to a generation workload is refused.</summary>
    public GuestChoice Of(ParseResult pr)
    {
        var choice = pr.GetValue(_workload)!;
        var protocol = pr.GetValue(_protocol)!.ToLowerInvariant() switch
        {
            "x86" => AsyncPfProtocol.X86,
            "arm" or "arm64" => AsyncPfProtocol.Arm,
            var w => throw new UsageException($"--protocol takes x86 or arm, not '{w}'"),
        };
        if (choice.Value is not null)
        {
            foreach (var (o, name) in new (Option, string)[] { (_memTasks, "--mem-tasks: only the mixed workload has memory tasks"), (_protocol, "--protocol: only the mixed workload's guest speaks an async-PF protocol") })
                if (pr.GetResult(o) is { Implicit: false }) throw new UsageException($"{name} (use --workload mixed)");
            return new GuestChoice(choice.Word, choice.Value.Value, null);
        }
        var n = pr.GetValue(_memTasks);
        if (n is < 1 or > TaskLayout.MaxMemoryTasks) throw new UsageException($"--mem-tasks {n}: use 1..{TaskLayout.MaxMemoryTasks}");
        return new GuestChoice(choice.Word, AccessOrder.Sequential, new MixedWorkload(n) { Protocol = protocol });
    }
}

/// <summary>--workload, --mem-tasks, --protocol: the word, the generation order, and the mixed workload if that is the choice.</summary>
internal sealed record GuestChoice(string Name, AccessOrder Order, MixedWorkload? Mixed)
{
    /// <summary>The same choice as arguments of a child `migrate source`.</summary>
    public IEnumerable<string> Arguments()
    {
        yield return "--workload";
        yield return Name;
        if (Mixed is not { } mx) yield break;
        yield return "--mem-tasks";
        yield return mx.MemoryTasks.ToString(CultureInfo.InvariantCulture);
        yield return "--protocol";
        yield return mx.Protocol == AsyncPfProtocol.Arm ? "arm" : "x86";
    }
}
