using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Selection;

namespace Faultline.Cli;

/// <summary>
/// For one backing: the engine <c>--engine auto</c> would pick (null: none can run here), why, and every engine's
/// verdict, fastest first (<see cref="EngineSelector"/>'s answer, or its one-line refusal as the reason).
/// </summary>
internal sealed record BackingEngines(Backing Backing, PagingMode? Chosen, string Reason, IReadOnlyList<EngineCandidate> Candidates)
{
    public string BackingName => Backing == Backing.Shmem ? "shmem" : "anon";

    public static BackingEngines Evaluate(HostCapabilities caps, Backing backing)
    {
        try
        {
            var c = EngineSelector.Evaluate(caps, backing);
            return new BackingEngines(backing, c.Chosen, c.Reason, c.Candidates);
        }
        catch (HostSupportException e)
        {
            return new BackingEngines(backing, null, e.Message, []);
        }
    }
}
