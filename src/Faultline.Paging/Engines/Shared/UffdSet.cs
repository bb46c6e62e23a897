using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Paging.Engines.Shared;

/// <summary>
/// The userfaultfds that cover guest RAM: one for all of it, or one per vCPU range (the seed's "multiple
/// userfaultfds"), MISSING mode on anonymous memory, MINOR on shmem, or MISSING and MINOR together on shmem whose page
/// cache fills lazily (a page not in the page cache faults MISSING, one there but not mapped faults MINOR). Empty for an
/// engine that needs none.
/// </summary>
internal sealed class UffdSet : IDisposable
{
    private readonly Userfaultfd[] _uffds;
    private readonly ulong _bytesPerUffd;

    public static readonly UffdSet None = new([], 1);

    private UffdSet(Userfaultfd[] uffds, ulong bytesPerUffd) { _uffds = uffds; _bytesPerUffd = bytesPerUffd; }

    public int Count => _uffds.Length;
    public IReadOnlyList<Userfaultfd> All => _uffds;
    public ulong BytesPerUffd => _bytesPerUffd;

    /// <param name="lazyShmem">Shmem: register MISSING as well as MINOR (needs UFFD_FEATURE_MISSING_SHMEM too), so that
    /// pages absent from the page cache fault and can be installed with UFFDIO_COPY.</param>
    public static UffdSet Open(GuestRegion ram, UffdFeatures extra, UffdLayout layout, int vcpus, bool lazyShmem = false)
    {
        var shmem = ram.Backing == Backing.Shmem;
        if (lazyShmem && !shmem) throw new ArgumentException("a lazy page cache needs shmem backing", nameof(lazyShmem));
        var features = extra | (shmem ? UffdFeatures.MinorShmem : UffdFeatures.None) | (lazyShmem ? UffdFeatures.MissingShmem : UffdFeatures.None);
        var mode = shmem ? UffdRegisterMode.Minor : UffdRegisterMode.Missing;
        if (lazyShmem) mode |= UffdRegisterMode.Missing;
        var count = layout == UffdLayout.Single ? 1 : vcpus;
        var per = ram.Size / (ulong)count;
        var uffds = new Userfaultfd[count];
        var set = new UffdSet(uffds, per);
        try
        {
            for (var i = 0; i < count; i++)
            {
                uffds[i] = Userfaultfd.Open(features);
                var ioctls = uffds[i].Register(ram.Host.Add((ulong)i * per), per, mode);
                // _UFFDIO_CONTINUE (7) on shmem, _UFFDIO_COPY (3) where pages can be missing: what the range answers, not assumed
                if (shmem && (ioctls & (1UL << 7)) == 0) throw new HostSupportException("the userfaultfd range does not support UFFDIO_CONTINUE");
                if ((!shmem || lazyShmem) && (ioctls & (1UL << 3)) == 0)
                    throw new HostSupportException($"the userfaultfd range ({mode}) does not support UFFDIO_COPY");
            }
            return set;
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    /// <summary>The userfaultfd that covers page <paramref name="index"/>.</summary>
    public Userfaultfd Of(ulong index) => _uffds.Length == 1 ? _uffds[0] : _uffds[(index << 12) / _bytesPerUffd];

    /// <summary>Whether two pages are under the same userfaultfd (a multi-page ioctl can't cross two).</summary>
    public bool Same(ulong a, ulong b) => _uffds.Length <= 1 || (a << 12) / _bytesPerUffd == (b << 12) / _bytesPerUffd;

    /// <summary>Registers another range (an eviction area) on every userfaultfd, split as guest RAM is.</summary>
    public void RegisterAlso(GuestRegion region, UffdRegisterMode mode)
    {
        for (var i = 0; i < _uffds.Length; i++) _uffds[i].Register(region.Host.Add((ulong)i * _bytesPerUffd), _bytesPerUffd, mode);
    }

    public void Dispose()
    {
        foreach (var u in _uffds) u?.Dispose();
    }
}
