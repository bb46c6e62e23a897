using System.Security.Cryptography;
using Faultline.Guest;
using Faultline.Kvm.Memory;

namespace Faultline.Snapshot;

/// <summary>
/// The SHA-256 of the generated guest image as a fresh machine holds it (page tables, GDT, IDT, kernel and workload
/// code: GPA 0 to the end of the workload code). A snapshot is only restored into the image it ran: registers point
/// into that code.
/// </summary>
internal static class GuestImageHash
{
    private const int ImageEnd = 0x80000;

    public static string Of(GuestMachine fresh) => Convert.ToHexStringLower(SHA256.HashData(fresh.System.Span(new GuestAddress(0), ImageEnd)));
}
