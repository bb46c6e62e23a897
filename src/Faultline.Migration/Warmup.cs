using System.Runtime.CompilerServices;
using Faultline.Guest;
using Faultline.Guest.Tasks;
using Faultline.Kvm;
using Faultline.Migration.Protocol;
using Faultline.Paging.AsyncPf;

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
        // the mixed workload's sections too (measured cold: 3–4 ms of JIT between the pause and the state on the wire)
        states[0] = new VcpuState
        {
            Id = 0, AsyncPf = new AsyncPfVcpuState(0, 0, 0, [new AsyncPfOutstanding(1, 0, AsyncPfStage.Waiting)]),
            TaskKernel = new TaskSystemState([(0, new byte[8])]),
        };
        VcpuStateMessage.Decode(VcpuStateMessage.Encode(0, states), vcpus);
    }

    /// <summary>
    /// Before the state arrives (mixed workload): the task kernel's restore (run by the receiver in
    /// DestinationGuest.Resume) and the async-PF import (run by each vCPU thread) once, with what is there (no change).
    /// </summary>
    public static void TaskRestorePath(TaskProgram tasks, int vcpu, AsyncPfHost? asyncPf)
    {
        tasks.Restore(vcpu, tasks.Capture(vcpu));
        tasks.CpuIterationsDone(vcpu);
        if (asyncPf is not null) asyncPf.Import(vcpu, asyncPf.Export(vcpu));
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
