using Faultline.Paging;
using Faultline.TestKit;

namespace Faultline.Snapshot.Tests;

/// <summary>
/// <c>snapshot restore --engine minor</c> on a lazy page cache: the memfd holds nothing of guest RAM before the guest
/// runs; each page enters its page cache at its fault (or from the fill), never all of it up front.
/// </summary>
public sealed class LazyMinorRestoreTests
{
    [KvmFact]
    public void The_first_instruction_does_not_wait_for_the_page_cache_and_only_touched_pages_enter_it()
    {
        var (m, r, resident) = RestoreMinor(fill: false);
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal((long)m.DataPages, r.PagesDemand);
        // with no fill, a page enters the page cache only at a guest fault, which comes after the first KVM_RUN: the
        // page cache holds exactly the pages the guest faulted in, and nothing of the rest of RAM, so none of it was
        // there (allocated or filled) when the first vCPU entered KVM_RUN. The guest's pass touches only the used half.
        Assert.Equal(r.PagesDemandTotal, resident);
        Assert.True(resident < (long)m.Pages * 3 / 4, $"{resident} of {m.Pages} pages are in the page cache: it was allocated up front");
        Assert.Contains("MISSING+MINOR", r.Mechanism, StringComparison.Ordinal);
    }

    [KvmFact]
    public void With_the_fill_every_page_ends_in_the_page_cache_once_and_the_guest_sees_what_was_saved()
    {
        var (m, r, resident) = RestoreMinor(fill: true);
        Assert.Equal(0UL, r.GuestMismatches);
        Assert.Equal((long)m.DataPages, r.PagesDemand + r.PagesPrefetched);   // each data page read once, by a fault or the fill
        Assert.True(r.ResidentMs > 0);
        Assert.Equal((long)m.Pages, resident);
    }

    /// <summary>Saves a 16 MiB guest and restores it with <c>minor</c>; resident: the memfd's page cache after the run (mincore(2)).</summary>
    private static (SnapshotManifest Manifest, RestoreReport Report, long Resident) RestoreMinor(bool fill)
    {
        using var snap = TempSnapshot.Save(ram: 16 << 20);
        long resident = -1;
        var r = SnapshotRestorer.Restore(snap.Dir, new RestoreOptions(PagingMode.Minor)
        {
            Fill = fill, Record = false,
            Inspect = machine => resident = machine.Ram.ResidentPages(),
        });
        return (snap.Saved.Manifest, r, resident);
    }
}
