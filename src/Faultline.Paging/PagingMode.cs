namespace Faultline.Paging;

/// <summary>How a missing page is detected and who resolves it.</summary>
public enum PagingMode
{
    /// <summary>Memory populated up front: the baseline.</summary>
    None,
    /// <summary>userfaultfd MISSING on anonymous memory, UFFDIO_COPY by reader threads.</summary>
    Missing,
    /// <summary>userfaultfd MINOR on shmem with a populated page cache, UFFDIO_CONTINUE by reader threads.</summary>
    Minor,
    /// <summary>Memory-fault exits: the faulting vCPU exits KVM_RUN and installs the page on its own thread.</summary>
    Exits,
    /// <summary>KVM Userfault: a per-memslot bitmap; a vCPU touching a marked page exits.</summary>
    Bitmap,
    /// <summary>Bitmap for vCPU faults, userfaultfd MISSING (readers) for everything else (seed 002's "MISSING + KVM UF").</summary>
    MissingBitmap,
    /// <summary>Bitmap for vCPU faults, userfaultfd MINOR for everything else ("MINOR + KVM UF").</summary>
    MinorBitmap,
}

public static class PagingModes
{
    public static string Name(this PagingMode m) => m switch
    {
        PagingMode.None => "none", PagingMode.Missing => "missing", PagingMode.Minor => "minor", PagingMode.Exits => "exits",
        PagingMode.Bitmap => "bitmap", PagingMode.MissingBitmap => "missing+bitmap", PagingMode.MinorBitmap => "minor+bitmap",
        _ => m.ToString(),
    };

    public static bool TryParse(string s, out PagingMode mode)
    {
        foreach (var m in Enum.GetValues<PagingMode>())
            if (string.Equals(m.Name(), s.Trim(), StringComparison.OrdinalIgnoreCase)) { mode = m; return true; }
        mode = default;
        return false;
    }

    public static string AllNames => string.Join(", ", Enum.GetValues<PagingMode>().Select(Name));

    /// <summary>Whether the mode has userfaultfd reader threads.</summary>
    /// <summary>Whether faults exit to the vCPU thread, so that it can answer one with an async "not present" (the exit-based engines).</summary>
    public static bool SupportsAsyncPf(this PagingMode m) => m is PagingMode.Exits or PagingMode.Bitmap or PagingMode.MissingBitmap or PagingMode.MinorBitmap;

    public static bool HasReaders(this PagingMode m) => m is PagingMode.Missing or PagingMode.Minor or PagingMode.MissingBitmap or PagingMode.MinorBitmap;
}

/// <summary>How many userfaultfds cover guest RAM.</summary>
public enum UffdLayout
{
    /// <summary>One userfaultfd for all guest RAM.</summary>
    Single,
    /// <summary>One per vCPU range (the seed's "multiple userfaultfds").</summary>
    PerVcpu,
}
