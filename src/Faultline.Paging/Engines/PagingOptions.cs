using Faultline.Kvm.Memory;

namespace Faultline.Paging.Engines;

/// <summary>How to resolve CPL3 faults that KVM reports without an address (-EFAULT).</summary>
public enum AddressRecovery
{
    /// <summary>Decode the instruction at RIP (Iced), compute its memory operand and walk the guest page tables.</summary>
    Decode,
    /// <summary>A blocking userfaultfd with THREAD_ID: the reader tells the faulting vCPU thread the address and kicks it.</summary>
    UffdThreadId,
}

/// <summary>An engine's settings.</summary>
public sealed record PagingOptions(PagingMode Mode, Backing Backing, UffdLayout Uffds = UffdLayout.Single, int Readers = 1)
{
    public AddressRecovery AddressRecovery { get; init; } = AddressRecovery.Decode;
    /// <summary>Use native KVM_MEM_USERFAULT when the kernel has it (bitmap modes); false forces the emulation.</summary>
    public bool PreferNativeUserfault { get; init; } = true;
    /// <summary>
    /// Shmem only. True: the page cache is filled from the source up front (MINOR faults then only map it). False: each
    /// page's bytes come from the source on its first fault or an install through <see cref="IPagingEngine.Sink"/>; the
    /// page cache is then allocated (zeros) before the guest runs, so MINOR faults still fire, unless the engine can run
    /// on a lazy page cache (<c>minor</c>: MISSING and MINOR registered, nothing allocated up front) and the caller
    /// has not allocated it already (a migration destination does, with <see cref="Faultline.Kvm.Memory.GuestRegion.MapBackingView"/>).
    /// </summary>
    public bool PrefillPageCache { get; init; } = true;
    /// <summary>Async page faults (exit-based engines only): off by default.</summary>
    public AsyncPf.AsyncPfOptions AsyncPf { get; init; } = new();
    /// <summary>How long a fault path waits for a page before it gives up (a remote source that went silent).</summary>
    public TimeSpan PageTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Rejects impossible combinations before any VM exists (exit 2).</summary>
    public void Validate(int vcpus)
    {
        if (Mode is PagingMode.Minor or PagingMode.MinorBitmap && Backing != Backing.Shmem)
            throw new UsageException($"mode {Mode.Name()} needs shmem backing (MINOR faults exist only for a populated page cache): use --backing shmem");
        if (Mode is PagingMode.Missing or PagingMode.MissingBitmap && Backing != Backing.Anonymous)
            throw new UsageException($"mode {Mode.Name()} is for anonymous memory; on shmem use {(Mode == PagingMode.Missing ? "minor" : "minor+bitmap")}");
        if (Mode.HasReaders())
        {
            var uffds = Uffds == UffdLayout.Single ? 1 : vcpus;
            if (Readers < 1 || Readers > Math.Max(vcpus, uffds) * 4 || Readers > 256)
                throw new UsageException($"--readers {Readers} is outside 1..{Math.Min(256, Math.Max(vcpus, uffds) * 4)} for {vcpus} vCPU(s)");
        }
    }
}
