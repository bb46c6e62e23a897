namespace Faultline.Paging.AsyncPf;

/// <summary>When a fault exit is turned into an async page fault (<c>--async-pf</c>).</summary>
public enum AsyncPfMode
{
    /// <summary>Never: every fault is resolved synchronously (the vCPU waits for its page).</summary>
    Never,
    /// <summary>Whenever the guest can take one (enabled, interrupts on, user mode, under the outstanding limit).</summary>
    Always,
    /// <summary>Where it pays: only when the page is expected to take longer than the notifications cost (<see cref="AsyncPfPolicy"/>).</summary>
    Auto,
}

/// <summary>Async page fault settings of an engine.</summary>
public sealed record AsyncPfOptions(AsyncPfMode Mode = AsyncPfMode.Never)
{
    /// <summary>Outstanding async faults per vCPU (KVM's ASYNC_PF_PER_VCPU).</summary>
    public int Limit { get; init; } = 64;
    /// <summary>
    /// What one async fault costs the vCPU before anything is measured: "not present" (~30 µs exit → handler) plus
    /// "page ready" (~115 µs install → task running), HOST.md's "Async PF flow at CPL3". The policy replaces it with
    /// what it measures.
    /// </summary>
    public TimeSpan PriorNotifyCost { get; init; } = TimeSpan.FromMicroseconds(150);
    /// <summary>
    /// While async faults are outstanding, a self-kick timer on the vCPU's own CPU ends KVM_RUN this often, so that a
    /// "page ready" posted from another thread is injected within one period even when the cross-CPU kick waits for
    /// the target CPU's next host tick (HOST.md: up to 4 ms here). Zero (the default): only the kick. Measured at
    /// 500 µs (`bench apf --ready-poll`, 3 interleaved pairs): the worst "ready" on 1 vCPU fell from 2.5 ms to 0.7 ms,
    /// but every expiry is an exit of the CPU task, and the 10 ms speedup fell from 1.98x to 1.80x.
    /// </summary>
    public TimeSpan ReadyPoll { get; init; } = TimeSpan.Zero;
    /// <summary>The guest ABI: x86's PV async PF, or arm64's SMCCC + SDEI + PPI (<see cref="Arm.ArmAsyncPf"/>).</summary>
    public AsyncPfProtocol Protocol { get; init; } = AsyncPfProtocol.X86;
    /// <summary>arm: the SDEI event for "not present" (the VMM's SET_SDEI before boot).</summary>
    public uint ArmEvent { get; init; } = Faultline.Kvm.ArmPvAsyncPf.DefaultAsyncPfEvent;
    /// <summary>arm: the "page ready" PPI, a vector on this host (the VMM's SET_IRQ before boot).</summary>
    public byte ArmReadyVector { get; init; } = Faultline.Kvm.ArmPvAsyncPf.DefaultReadyVector;

    public static AsyncPfMode Parse(string s) => s.ToLowerInvariant() switch
    {
        "never" or "off" or "sync" => AsyncPfMode.Never,
        "always" or "on" => AsyncPfMode.Always,
        "auto" => AsyncPfMode.Auto,
        _ => throw new UsageException($"--async-pf takes auto, always or never, not '{s}'"),
    };
}
