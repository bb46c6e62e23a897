using Faultline.Kvm.Memory;

namespace Faultline.Paging.Sources;

/// <summary>
/// Where a page's bytes come from: a generator, a snapshot file, a remote host. Engines call it on the fault path,
/// from vCPU and reader threads at once, so implementations are thread-safe and allocate nothing per call.
/// A remote source may block until the page arrives.
/// </summary>
public interface IPageSource
{
    /// <summary>Fills <paramref name="destination"/> (4096 bytes) with the page at <paramref name="page"/> (page-aligned GPA).</summary>
    void ReadPage(GuestAddress page, Span<byte> destination);

    /// <summary>A short description for reports.</summary>
    string Describe();
}
