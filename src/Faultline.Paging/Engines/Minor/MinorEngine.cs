using Faultline.Paging.Engines.Missing;

namespace Faultline.Paging.Engines.Minor;

/// <summary>
/// <c>minor</c>: userfaultfd MINOR on shmem. The page cache holds the bytes (filled up front, or by each install in
/// post-copy), the mapping does not: a vCPU's first access is a MINOR fault and a reader maps the page with
/// UFFDIO_CONTINUE.
/// </summary>
public sealed class MinorEngine(PagingOptions options) : UffdReaderEngine(options)
{
    private protected override string Describe(int readers) => $"userfaultfd MINOR + UFFDIO_CONTINUE by {readers} reader(s)";
}
