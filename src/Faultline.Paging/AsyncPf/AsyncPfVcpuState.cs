namespace Faultline.Paging.AsyncPf;

/// <summary>Where one outstanding async fault stands when its vCPU is paused.</summary>
public enum AsyncPfStage : byte
{
    /// <summary>"Not present" delivered; the page is not here yet.</summary>
    Waiting = 1,
    /// <summary>The page is here; its "page ready" has not gone to the guest yet.</summary>
    Queued = 2,
    /// <summary>"Page ready" is in the guest's area; the guest has not acknowledged it.</summary>
    Delivered = 3,
}

/// <summary>One fault the guest still waits for: its token, the page (index into guest RAM) and its stage.</summary>
public readonly record struct AsyncPfOutstanding(uint Token, ulong Page, AsyncPfStage Stage);

/// <summary>
/// One vCPU's x86 async-PF registration as a migration or a snapshot carries it: the guest's MSR_KVM_ASYNC_PF_EN and
/// MSR_KVM_ASYNC_PF_INT, the token counter, and the faults outstanding (oldest first). The area itself is guest
/// memory and travels with it.
/// </summary>
public sealed record AsyncPfVcpuState(ulong EnableMsr, ulong InterruptMsr, uint TokenCounter, IReadOnlyList<AsyncPfOutstanding> Outstanding)
{
    public static readonly AsyncPfVcpuState Disabled = new(0, 0, 0, []);
}
