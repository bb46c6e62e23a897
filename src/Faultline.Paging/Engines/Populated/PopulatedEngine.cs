using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Populated;

/// <summary>
/// <c>none</c>, the baseline: every page is written from the source before the guest runs (anonymous memory through
/// the mapping, shmem through its page cache), so no fault ever reaches Faultline.
/// </summary>
public sealed class PopulatedEngine(PagingOptions options) : PagingEngine(options)
{
    internal override bool ServesFaults => false;

    internal override void Prepare(GuestMachine machine, IPageSource source)
    {
        var s = Immediate(source, "populating memory up front");
        var ram = machine.Ram;
        if (ram.Backing == Backing.Shmem) PageCache.Fill(ram, s);
        else
            for (ulong off = 0; off < ram.Size; off += GuestAddress.PageSize)
                s.Read(ram.Base + off, ram.Span(ram.Base + off, (int)GuestAddress.PageSize));
        Tracker.MarkAllPresent();
        Mechanism = "memory populated up front";
    }
}
