using Faultline.Guest.Tasks;

namespace Faultline.Migration;

/// <summary>
/// The mixed workload as a migrated guest (<see cref="TaskKernel"/> in continuous mode): on every vCPU a CPU-bound task
/// and <see cref="MemoryTasks"/> memory tasks that check their share of the vCPU's pages in passes, yielding to each
/// other every slice. The source fills guest RAM with the pattern the tasks check; the destination lets each memory
/// task finish the pass it was in and one whole pass more (every page checked after the resume), then the guest ends.
/// With <see cref="GuestAsyncPf"/> the guest enables x86 async page faults at boot; whether a fault is async is the
/// destination's choice (its --async-pf policy).
/// </summary>
public sealed record MixedWorkload(int MemoryTasks = 1)
{
    /// <summary>The CPU task's chunk between two yields: about a millisecond of <c>dec; jnz</c> on this host.</summary>
    public const ulong DefaultChunk = 2_000_000;
    public ulong CpuChunk { get; init; } = DefaultChunk;
    public bool GuestAsyncPf { get; init; } = true;
    public ulong Seed { get; init; } = 0x5eed;

    internal TaskConfig TaskConfig => new(MemoryTasks, CpuChunk, GuestAsyncPf, Seed) { Continuous = true };

    public void Validate(int vcpus) => TaskConfig.Validate(vcpus);
}
