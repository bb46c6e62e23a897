using Faultline.Guest;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Missing;

/// <summary>
/// The wait-queue mechanisms: a vCPU touching a missing page sleeps in the userfaultfd (KVM's own page lookup blocks
/// there); reader threads read each fault and resolve it through the fault path, whose install (UFFDIO_COPY or
/// UFFDIO_CONTINUE) wakes the vCPU. Every fault crosses the userfaultfd's one wait queue.
/// </summary>
public abstract class UffdReaderEngine(PagingOptions options) : PagingEngine(options), IUffdFaultHandler
{
    private readonly UffdReaderPool _readers = new();
    private ulong _hostBase;

    internal override UffdSet OpenUffds(GuestMachine machine) =>
        UffdSet.Open(machine.Ram, UffdFeatures.None, Options.Uffds, machine.Config.Vcpus, lazyShmem: LazyShmem);

    internal override void Prepare(GuestMachine machine, IPageSource source)
    {
        _hostBase = machine.Ram.Host.Value;
        _readers.Start(Installer.Uffds, Options.Readers, this, pollIdle: false);
        Mechanism = Describe(Options.Readers);
    }

    private protected abstract string Describe(int readers);

    void IUffdFaultHandler.OnFault(in UffdFault f, FaultCounters c)
    {
        if (f.IsMinor) c.MinorFaults++;
        else c.MissingFaults++;
        if (!Path.Resolve((f.Address - _hostBase) >> 12)) c.AlreadyPresent++;
    }

    internal override IReadOnlyList<FaultCounters> ReaderCounters => _readers.Counters;

    protected override void DisposeMechanism()
    {
        _readers.Dispose();
        OpenedUffds.Dispose();
    }
}

/// <summary><c>missing</c>: userfaultfd MISSING on anonymous memory, UFFDIO_COPY by reader threads.</summary>
public sealed class MissingEngine(PagingOptions options) : UffdReaderEngine(options)
{
    private protected override string Describe(int readers) => $"userfaultfd MISSING + UFFDIO_COPY by {readers} reader(s)";
}
