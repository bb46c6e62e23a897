namespace Faultline.Guest;

/// <summary>Why <see cref="VcpuLoop.Run"/> returned (a failure is an exception instead).</summary>
public enum VcpuLoopEnd
{
    /// <summary>A hook said <see cref="VcpuLoopAction.Finish"/> (the workload's done(), a parked vCPU).</summary>
    Finished,
    /// <summary><see cref="VcpuLoop.RequestStop"/> was seen at an exit.</summary>
    Stopped,
}
