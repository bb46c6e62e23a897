using System.Buffers.Binary;
using Faultline.Kvm;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;

namespace Faultline.Guest;

/// <summary>
/// The generated guest: long-mode page tables, GDT with kernel and user segments, one TSS per vCPU (RSP0 = its kernel
/// stack), the IDT and the kernel's handlers, and the workloads' code. Written into the system region (slot 0).
/// </summary>
public sealed class GuestImage
{
    private readonly byte[] _kernelCode;
    private readonly ulong[] _handlers;
    private readonly bool[] _userCallable;
    private readonly byte[] _userCode;
    private readonly Dictionary<(Workload, AccessOrder), ulong> _entries;
    private readonly Dictionary<string, ulong> _routines;
    private readonly byte[]? _loaded;   // an image read back from what a machine of this build held: its bytes, no symbols

    /// <summary>Where the image ends: everything it writes lies in GPA [0, 0x80000) (page tables to the workload code).</summary>
    public const int Span = (int)GuestLayout.UserCodeMax;

    /// <summary>
    /// Names the code that generates images: the module version ids of this assembly and of the assembler (Iced). A
    /// deterministic build changes them whenever their IL changes, so two processes with the same id generate the same
    /// bytes for the same vCPU count, and an image saved by one can stand in for assembling it in the other.
    /// </summary>
    public static string GeneratorId =>
        $"{typeof(GuestImage).Module.ModuleVersionId:N}-{typeof(Iced.Intel.Assembler).Module.ModuleVersionId:N}";

    public int Vcpus { get; }

    public GuestImage(int vcpus, GuestKernel? kernel = null)
    {
        if (vcpus < 1 || vcpus > GuestLayout.MaxVcpus) throw new UsageException($"vCPU count {vcpus} is outside 1..{GuestLayout.MaxVcpus}");
        Vcpus = vcpus;
        (_kernelCode, _handlers, _userCallable, _routines) = (kernel ?? new GuestKernel()).Build(GuestLayout.KernelCode);
        if ((ulong)_kernelCode.Length > GuestLayout.KernelCodeMax - GuestLayout.KernelCode) throw new InvalidOperationException("guest kernel code too large");
        (_userCode, _entries) = Workloads.Build(GuestLayout.UserCode);
        if ((ulong)_userCode.Length > GuestLayout.UserCodeMax - GuestLayout.UserCode) throw new InvalidOperationException("workload code too large");
    }

    private GuestImage(byte[] loaded, int vcpus)
    {
        Vcpus = vcpus;
        _loaded = loaded;
        (_kernelCode, _handlers, _userCallable, _userCode) = ([], [], [], []);
        (_entries, _routines) = (new(), new());
    }

    /// <summary>
    /// An image from the bytes [0, <see cref="Span"/>) of a fresh machine of <paramref name="vcpus"/> vCPUs built by a
    /// process with the same <see cref="GeneratorId"/> (a snapshot keeps them): it writes those bytes and has no symbols,
    /// so it serves vCPUs that resume saved registers, not ones booted into a workload.
    /// </summary>
    public static GuestImage Loaded(byte[] bytes, int vcpus)
    {
        if (bytes.Length != Span) throw new ArgumentException($"an image is {Span} bytes, not {bytes.Length}", nameof(bytes));
        if (vcpus < 1 || vcpus > GuestLayout.MaxVcpus) throw new UsageException($"vCPU count {vcpus} is outside 1..{GuestLayout.MaxVcpus}");
        return new GuestImage(bytes, vcpus);
    }

    private GuestImage(GuestImage code, int vcpus)
    {
        Vcpus = vcpus;
        (_kernelCode, _handlers, _userCallable, _routines, _userCode, _entries) =
            (code._kernelCode, code._handlers, code._userCallable, code._routines, code._userCode, code._entries);
    }

    /// <summary>
    /// The same assembled code for another vCPU count (the code does not depend on it; the TSSs and GDT do): a caller
    /// that learns the count late can assemble first, on another thread.
    /// </summary>
    public GuestImage ForVcpus(int vcpus) =>
        _loaded is not null ? (vcpus == Vcpus ? this : throw new InvalidOperationException($"a loaded image is for {Vcpus} vCPU(s) only"))
        : vcpus is >= 1 and <= GuestLayout.MaxVcpus ? new GuestImage(this, vcpus) : throw new UsageException($"vCPU count {vcpus} is outside 1..{GuestLayout.MaxVcpus}");

    public ulong EntryOf(Workload w, AccessOrder order = AccessOrder.Sequential) => Symbols()._entries[(w, order)];
    public ulong HandlerOf(int vector) => Symbols()._handlers[vector];

    private GuestImage Symbols() => _loaded is null ? this : throw new InvalidOperationException("a loaded guest image has no symbols: it only resumes saved vCPUs");
    /// <summary>The address of a kernel routine added with <see cref="GuestKernel.AddRoutine"/>.</summary>
    public ulong RoutineOf(string name) =>
        Symbols()._routines.TryGetValue(name, out var a) ? a : throw new ArgumentException($"the guest kernel has no routine '{name}'", nameof(name));

    /// <summary>
    /// Writes every system structure into a fresh (all-zero) system region, which must start at GPA 0 and span
    /// <see cref="GuestLayout.SystemSize"/>. Only the structures are written: the rest of the 4 MiB stays untouched, so
    /// its pages are not even allocated before the guest uses them (clearing them cost 1024 page faults at every VM build).
    /// </summary>
    public void WriteTo(GuestRegion system)
    {
        if (system.Base.Value != 0 || system.Size < GuestLayout.SystemSize) throw new ArgumentException("system region must be [0, 4 MiB)");
        var mem = system.Span(new GuestAddress(0), (int)GuestLayout.SystemSize);
        if (_loaded is not null)
        {
            // page by page, and only pages that hold something: the others stay unallocated, as in a generated image
            for (var p = 0; p < Span; p += (int)GuestAddress.PageSize)
            {
                var page = _loaded.AsSpan(p, (int)GuestAddress.PageSize);
                if (page.ContainsAnyExcept((byte)0)) page.CopyTo(mem[p..]);
            }
            return;
        }
        const ulong P = 1, W = 2, U = 4, PS = 0x80;
        Put(mem, GuestLayout.Pml4, GuestLayout.Pdpt | P | W | U);
        for (var g = 0; g < GuestLayout.MappedGiB; g++)
        {
            var pd = GuestLayout.PageDirectories + (ulong)g * 0x1000;
            Put(mem, GuestLayout.Pdpt + (ulong)g * 8, pd | P | W | U);
            for (var i = 0; i < 512; i++) Put(mem, pd + (ulong)i * 8, ((ulong)g << 30) + ((ulong)i << 21) | P | W | U | PS);
        }
        // GDT: null, kernel code, kernel data, user code, user data, then a 16-byte TSS descriptor per vCPU
        Put(mem, GuestLayout.Gdt + 0x08, 0x00af9b000000ffffUL);
        Put(mem, GuestLayout.Gdt + 0x10, 0x00cf93000000ffffUL);
        Put(mem, GuestLayout.Gdt + 0x18, 0x00affb000000ffffUL);
        Put(mem, GuestLayout.Gdt + 0x20, 0x00cff3000000ffffUL);
        for (var v = 0; v < Vcpus; v++)
        {
            var tss = GuestLayout.Tss(v);
            var d = GuestLayout.Gdt + GuestLayout.TssSelector(v);
            Put(mem, d, 0x67UL | (tss & 0xFFFFFF) << 16 | 0x8BUL << 40 | (tss >> 24 & 0xFF) << 56); // busy 64-bit TSS
            Put(mem, d + 8, tss >> 32);
            Put(mem, tss + 4, GuestLayout.KernelStackTop(v));                                  // RSP0
            BinaryPrimitives.WriteUInt16LittleEndian(mem[(int)(tss + 0x66)..], 0x68);          // no I/O bitmap
        }
        for (var v = 0; v < 256; v++)
        {
            var h = _handlers[v];
            var dpl = _userCallable[v] ? 3UL : 0UL;
            var lo = (h & 0xFFFF) | (ulong)GuestLayout.KernelCs << 16 | (0x8EUL | dpl << 5) << 40 | (h >> 16 & 0xFFFF) << 48;
            Put(mem, GuestLayout.Idt + (ulong)v * 16, lo);
            Put(mem, GuestLayout.Idt + (ulong)v * 16 + 8, h >> 32);
        }
        _kernelCode.CopyTo(mem[(int)GuestLayout.KernelCode..]);
        _userCode.CopyTo(mem[(int)GuestLayout.UserCode..]);
    }

    private static void Put(Span<byte> mem, ulong at, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(mem[(int)at..], value);

    /// <summary>Long-mode special registers for vCPU <paramref name="vcpu"/> at the given privilege level.</summary>
    public KvmSregs SpecialRegisters(KvmSregs s, int vcpu, PrivilegeLevel level)
    {
        s.Cr3 = GuestLayout.Pml4;
        s.Cr4 = 0x20;            // PAE
        s.Cr0 = 0x80010001;      // PG, WP, PE
        s.Efer = 0x500;          // LME, LMA
        s.Gdt = new KvmDtable { Base = GuestLayout.Gdt, Limit = (ushort)(0x28 + 16 * Vcpus - 1) };
        s.Idt = new KvmDtable { Base = GuestLayout.Idt, Limit = 256 * 16 - 1 };
        var user = level == PrivilegeLevel.User;
        var code = new KvmSegment
        {
            Base = 0, Limit = 0xffffffff, Selector = user ? GuestLayout.UserCs : GuestLayout.KernelCs, Type = 11, Present = 1,
            Dpl = (byte)(user ? 3 : 0), S = 1, L = 1, G = 1,
        };
        var data = new KvmSegment
        {
            Base = 0, Limit = 0xffffffff, Selector = user ? GuestLayout.UserDs : GuestLayout.KernelDs, Type = 3, Present = 1,
            Dpl = (byte)(user ? 3 : 0), S = 1, Db = 1, G = 1,
        };
        s.Cs = code;
        s.Ds = s.Es = s.Fs = s.Gs = s.Ss = data;
        s.Tr = new KvmSegment { Base = GuestLayout.Tss(vcpu), Limit = 0x67, Selector = GuestLayout.TssSelector(vcpu), Type = 11, Present = 1 };
        return s;
    }

    /// <summary>Points a vCPU at a workload: special registers for its level, entry registers from the arguments.</summary>
    public void Boot(Vcpu vcpu, Workload workload, WorkloadArgs args, PrivilegeLevel level)
    {
        vcpu.SetSregs(SpecialRegisters(vcpu.GetSregs(), vcpu.Id, level));
        vcpu.SetRegs(EntryRegisters(vcpu.Id, workload, args));
    }

    /// <summary>The registers a vCPU enters the workload with (the generation program's: <see cref="GenerationProgram"/>).</summary>
    public KvmRegs EntryRegisters(int vcpu, Workload workload, WorkloadArgs args)
    {
        if (workload == Workload.Generations) return GenerationProgram.EntryRegisters(EntryOf(workload, args.Order), vcpu, args);
        var (mask, inc, start) = args.Lcg();
        var r = new KvmRegs
        {
            Rip = EntryOf(workload, args.Order), Rflags = 2, Rsp = GuestLayout.UserStackTop(vcpu),
            Rdi = args.Start, Rsi = args.End, Rdx = args.Seed, Rcx = (ulong)Math.Clamp(args.QwordsPerPage, 1, 512), Rbp = args.Seed2,
            R8 = start, R12 = mask, R13 = inc, Rbx = args.Pages, R11 = args.Order == AccessOrder.Random ? mask + 1 : 0,
        };
        if (args.Order == AccessOrder.Hotset)
        {
            r.R8 = Hotset.InitialState(args.OrderSeed); r.R11 = args.Pages; r.R12 = 0; r.R13 = Hotset.DriftEvery;
        }
        return r;
    }
}
