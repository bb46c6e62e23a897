namespace Faultline.Kvm.Uffd;

/// <summary>UFFD_FEATURE_* bits (uapi/linux/userfaultfd.h).</summary>
[Flags]
public enum UffdFeatures : ulong
{
    None = 0,
    PagefaultFlagWp = 1 << 0, EventFork = 1 << 1, EventRemap = 1 << 2, EventRemove = 1 << 3, MissingHugetlbfs = 1 << 4,
    MissingShmem = 1 << 5, EventUnmap = 1 << 6, Sigbus = 1 << 7, ThreadId = 1 << 8, MinorHugetlbfs = 1 << 9, MinorShmem = 1 << 10,
    ExactAddress = 1 << 11, WpHugetlbfsShmem = 1 << 12, WpUnpopulated = 1 << 13, Poison = 1 << 14, WpAsync = 1 << 15, Move = 1 << 16,
}

/// <summary>UFFDIO_REGISTER_MODE_* bits.</summary>
[Flags]
public enum UffdRegisterMode : ulong
{
    Missing = 1, WriteProtect = 2, Minor = 4,
}

/// <summary>What a resolving ioctl did: an errno we expect is an outcome, not an exception (firecracker's uffd handler).</summary>
public enum ResolveOutcome
{
    /// <summary>The page is now installed by this call.</summary>
    Installed,
    /// <summary>EEXIST: another path installed it first. No wake happened for that range.</summary>
    AlreadyPresent,
    /// <summary>EAGAIN: the mm layout is changing; retry.</summary>
    Retry,
}

/// <summary>A page-fault message read from a userfaultfd.</summary>
public readonly record struct UffdFault(ulong Address, bool IsWrite, bool IsMinor, bool IsWp, int ThreadId);

/// <summary>What a userfaultfd message was.</summary>
public enum UffdEventKind { None, PageFault, Remove, Other, Closed }

/// <summary>One userfaultfd message: a page fault at [Address, End) or a removed range [Address, End) (madvise DONTNEED, a balloon).</summary>
public readonly record struct UffdEvent(UffdEventKind Kind, ulong Address, ulong End, bool IsWrite);
