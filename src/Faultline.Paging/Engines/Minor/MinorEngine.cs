using Faultline.Paging.Engines.Missing;

namespace Faultline.Paging.Engines.Minor;

/// <summary>
/// <c>minor</c>: userfaultfd on shmem. With the page cache filled up front (or allocated by a migration destination),
/// guest RAM is registered MINOR: a vCPU's first access finds the page in the page cache but not mapped, and a reader
/// maps it with UFFDIO_CONTINUE (after writing its bytes, in post-copy). With a lazy page cache
/// (<see cref="PagingOptions.PrefillPageCache"/> false, nothing allocated), it is registered MISSING and MINOR: a page
/// not in the page cache faults MISSING and goes in with UFFDIO_COPY, which allocates, fills and maps it in one call;
/// a page put in the page cache by another path faults MINOR and is written and continued.
/// </summary>
public sealed class MinorEngine(PagingOptions options) : UffdReaderEngine(options)
{
    internal override bool SupportsLazyPageCache => true;

    private protected override string Describe(int readers) => LazyShmem
        ? $"userfaultfd MISSING+MINOR on a lazy page cache, UFFDIO_COPY (UFFDIO_CONTINUE for pages in the cache) by {readers} reader(s)"
        : $"userfaultfd MINOR + UFFDIO_CONTINUE by {readers} reader(s)";
}
