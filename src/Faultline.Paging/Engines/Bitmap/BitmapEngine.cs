using Faultline.Guest;
using Faultline.Kvm;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;
using Faultline.Paging.Engines.Shared;
using Faultline.Paging.Sources;

namespace Faultline.Paging.Engines.Bitmap;

/// <summary>
/// <c>bitmap</c>, KVM Userfault (seed 002): a per-memslot bitmap; a vCPU touching a marked page exits KVM_RUN with the
/// address and its own thread fetches the page, even when the page is present. Native where the kernel has
/// KVM_MEM_USERFAULT (detected by trying the flag); otherwise emulated with a SIGBUS userfaultfd and
/// <see cref="UserfaultMarks"/>, the vCPU's exits resolved as <c>exits</c> resolves them.
/// </summary>
public sealed class BitmapEngine(PagingOptions options) : PagingEngine(options), IUserfaultBitmap
{
    private UserfaultBitmap? _bitmap;
    private UserfaultMarks? _marks;
    private ExitResolver? _resolver;
    private bool _native;

    internal override UserfaultBitmap? Bitmap => _bitmap;
    public bool IsNative => _native;
    /// <summary>The bitmap itself (marked pages), once started.</summary>
    public UserfaultBitmap? UserfaultBits => _bitmap;

    internal override UffdSet OpenUffds(GuestMachine machine)
    {
        _bitmap = new UserfaultBitmap(machine.Ram.PageCount);
        _native = Options.PreferNativeUserfault && Vm.ProbeNativeUserfault(machine.Kvm);
        return _native ? UffdSet.None : UffdSet.Open(machine.Ram, UffdFeatures.Sigbus, Options.Uffds, machine.Config.Vcpus);
    }

    internal override bool WakeOnInstall => false;   // faults exit: nobody sleeps in the userfaultfd

    internal override bool SupportsAsyncPf => true;   // faults exit: the vCPU thread decides

    internal override void Prepare(GuestMachine machine, IPageSource source)
    {
        _marks = new UserfaultMarks(machine, _bitmap!, Tracker, Installer.Uffds, _native);
        Installer.Evicted = _marks;
        _resolver = new ExitResolver(machine, Tracker, Path, _bitmap) { Async = AsyncPf };
        _marks.MarkAll();
        Mechanism = _native ? "native KVM_MEM_USERFAULT bitmap" : "emulated KVM Userfault: bitmap + SIGBUS userfaultfd exits";
    }

    internal override void OnStart(Vcpu vcpu) => _resolver!.OnVcpuThreadStart(vcpu);
    internal override bool HandleExit(Vcpu vcpu, in VcpuExit exit, FaultCounters c) => _resolver!.TryHandle(vcpu, exit, c);

    public void MarkUserfault(GuestAddress page) => Marks.Mark(page);
    public void ClearUserfault(GuestAddress page) => Marks.Clear(page, Path);
    public bool IsUserfault(GuestAddress page) => Marks.IsMarked(page);
    private UserfaultMarks Marks => _marks ?? throw new InvalidOperationException("engine not started");

    internal override long ExtraMemoryBytes => _marks?.MemoryBytes ?? 0;

    protected override void DisposeMechanism()
    {
        OpenedUffds.Dispose();
        _marks?.Dispose();
        _bitmap?.Dispose();
    }
}
