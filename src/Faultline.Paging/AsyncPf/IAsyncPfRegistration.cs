using Faultline.Guest;

namespace Faultline.Paging.AsyncPf;

/// <summary>
/// The guest's async-PF registration on a VM whose memory is all present (a migration source, a guest being
/// snapshotted): the VMM answers the guest's registration calls of its protocol and keeps what they set, per vCPU, so
/// that it can carry the registration to where pages will be missing (<see cref="AsyncPfHost.Import"/>). Nothing is
/// ever missing here, so nothing is ever sent to the guest and no fault is ever outstanding.
/// </summary>
public interface IAsyncPfRegistration : IExitHandler
{
    AsyncPfProtocol Protocol { get; }

    /// <summary>vCPU <paramref name="vcpu"/>'s registration: the enable word and the "page ready" interrupt, no outstanding fault.</summary>
    AsyncPfVcpuState Export(int vcpu);

    /// <summary>The registration of <paramref name="protocol"/>'s guest ABI on <paramref name="machine"/>'s VM, before its vCPUs run.</summary>
    public static IAsyncPfRegistration For(AsyncPfProtocol protocol, GuestMachine machine, AsyncPfOptions options) => protocol switch
    {
        AsyncPfProtocol.Arm => new Arm.ArmAsyncPfRegisters(machine, options),
        _ => new AsyncPfRegisters(machine),
    };
}
