namespace Faultline.Migration.Source;

/// <summary>What brought a source vCPU out of KVM_RUN for the pause: the exit after which its thread saw the pause flag.</summary>
public enum VcpuStopCause
{
    /// <summary>The cross-CPU kick (tgkill from the pausing thread).</summary>
    Kick,
    /// <summary>An expiry of the vCPU's own self-kick timer.</summary>
    SelfKick,
    /// <summary>Both signals were drained at that exit.</summary>
    Both,
    /// <summary>The vCPU was outside KVM_RUN, or left it by itself (a guest call, an interrupted run with no signal left to drain).</summary>
    Exit,
}
