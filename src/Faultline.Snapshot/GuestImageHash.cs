using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Migration.Protocol;

namespace Faultline.Snapshot;

/// <summary>
/// The CRC32C of the generated guest image as a fresh machine holds it (page tables, GDT, IDT, kernel and workload
/// code: GPA 0 to the end of the workload code). A snapshot is only restored into the image it ran: registers point
/// into that code. (A CRC, not a cryptographic hash: it tells builds apart, and costs no crypto library load at restore.)
/// </summary>
internal static class GuestImageHash
{
    private const int ImageEnd = 0x80000;

    public static uint Of(GuestMachine fresh) => Crc32C.Compute(fresh.System.Span(new GuestAddress(0), ImageEnd));
}
