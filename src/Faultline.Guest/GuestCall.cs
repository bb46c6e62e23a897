using Faultline.Kvm;

namespace Faultline.Guest;

/// <summary>The guest ABI's calls: a qword store to <see cref="GuestLayout.Doorbell"/> + 8 × op, the value being the argument.</summary>
public enum GuestOp
{
    /// <summary>done(result): the workload finished; result is its answer (mismatch count, checksum, pages).</summary>
    Done = 0,
    /// <summary>report(value): progress or a value for the host; the guest continues.</summary>
    Report = 1,
    /// <summary>fail(code): the guest found something wrong and stops.</summary>
    Fail = 2,
    /// <summary>An exception reached the guest kernel's default handler: value = vector; RBX error code, RCX RIP, RDX CR2.</summary>
    Exception = 3,
}

/// <summary>A decoded doorbell store.</summary>
public readonly record struct GuestCall(GuestOp Op, ulong Value)
{
    /// <summary>Decodes a vCPU exit as a guest call; false when it is not a doorbell store.</summary>
    public static bool TryDecode(in VcpuExit exit, out GuestCall call)
    {
        if (exit.Kind == VcpuExitKind.Mmio && exit.IsWrite && (exit.Address.Value & ~0xFFFUL) == GuestLayout.Doorbell)
        {
            call = new GuestCall((GuestOp)((exit.Address.Value & 0xFFF) >> 3), exit.Data);
            return true;
        }
        call = default;
        return false;
    }
}
