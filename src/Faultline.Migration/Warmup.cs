using System.Runtime.CompilerServices;
using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Migration.Protocol;

namespace Faultline.Migration;

/// <summary>
/// JIT-compiles what runs inside the downtime before the pause: capturing, encoding, decoding and restoring vCPU
/// state and the first KVM_RUN. Cold, these cost tens of milliseconds in a fresh process (measured: 30 ms of a
/// 35 ms downtime); warm, the downtime is the kick and a few ioctls.
/// </summary>
internal static class Warmup
{
    public static void StatePath(int vcpus)
    {
        var states = new VcpuState[vcpus];
        for (var i = 0; i < vcpus; i++)
            states[i] = new VcpuState { Id = i };
        var bytes = VcpuStateMessage.Encode(0, states);
        var frame = new byte[Wire.HeaderSize + bytes.Length];
        FrameCodec.Write(frame, FrameType.VcpuState, 0, bytes);
        VcpuStateMessage.Decode(bytes, vcpus);
    }

    /// <summary>On a destination vCPU thread, before the state arrives: restores the vCPU's own current state once.</summary>
    public static void RestorePath(Vcpu vcpu)
    {
        vcpu.SetSregs(vcpu.GetSregs());
        vcpu.SetRegs(vcpu.GetRegs());
        vcpu.SetEvents(vcpu.GetEvents());
        RuntimeHelpers.PrepareMethod(typeof(Vcpu).GetMethod(nameof(Vcpu.Run))!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(GuestCall).GetMethod(nameof(GuestCall.TryDecode))!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(Clock).GetMethod(nameof(Clock.NowNs))!.MethodHandle);
    }
}
