using Faultline.Guest.Tasks;
using Faultline.Paging.AsyncPf;

namespace Faultline.Migration;

/// <summary>
/// The mixed workload as a migrated guest (<see cref="TaskKernel"/> in continuous mode): on every vCPU a CPU-bound task
/// and <see cref="MemoryTasks"/> memory tasks that check their share of the vCPU's pages in passes, yielding to each
/// other every slice. The source fills guest RAM with the pattern the tasks check; the destination lets each memory
/// task finish the pass it was in and one whole pass more (every page checked after the resume), then the guest ends.
/// With <see cref="GuestAsyncPf"/> the guest enables async page faults at boot with <see cref="Protocol"/>'s guest ABI
/// (x86's MSRs, or arm's SMCCC calls and SDEI registration); whether a fault is async is the destination's choice (its
/// --async-pf policy).
/// </summary>
public sealed record MixedWorkload(int MemoryTasks = 1)
{
    /// <summary>The CPU task's chunk between two yields: about a millisecond of <c>dec; jnz</c> on this host.</summary>
    public const ulong DefaultChunk = 2_000_000;
    public ulong CpuChunk { get; init; } = DefaultChunk;
    public bool GuestAsyncPf { get; init; } = true;
    public ulong Seed { get; init; } = 0x5eed;
    /// <summary>The guest's async-PF ABI (its handlers and registration calls); both ends must run the same.</summary>
    public AsyncPfProtocol Protocol { get; init; } = AsyncPfProtocol.X86;

    /// <summary>The task kernel of <see cref="Protocol"/>, its "page ready" vector <paramref name="options"/>' (arm: SET_IRQ's).</summary>
    internal TaskKernel Kernel(AsyncPfOptions options) =>
        Protocol == AsyncPfProtocol.Arm ? new TaskKernel(options.ArmReadyVector, TaskProtocol.Arm) : new TaskKernel();

    internal TaskConfig TaskConfig => new(MemoryTasks, CpuChunk, GuestAsyncPf, Seed) { Continuous = true };

    public void Validate(int vcpus) => TaskConfig.Validate(vcpus);
}
