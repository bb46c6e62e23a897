namespace Faultline.Guest;

/// <summary>What a <see cref="IVcpuHooks"/> call tells the <see cref="VcpuLoop"/> to do next.</summary>
public enum VcpuLoopAction
{
    /// <summary>Re-enter KVM_RUN.</summary>
    Continue,
    /// <summary>End the loop: <see cref="VcpuLoop.Run"/> returns <see cref="VcpuLoopEnd.Finished"/>.</summary>
    Finish,
}
