using Faultline.Kvm.Interop;
using Iced.Intel;

namespace Faultline.Paging.Decode;

/// <summary>
/// Finds the guest physical address(es) an instruction accesses, for faults KVM reports without one (CPL3 -EFAULT
/// on this host): reads the instruction at RIP through a page walk, decodes it with Iced, computes each memory
/// operand's linear address from the registers (explicit operands, string operands, stack pushes and pops) and
/// translates it. The last decoded instruction is cached by RIP: a fault loop decodes once. One per vCPU thread;
/// allocation-free after construction.
/// </summary>
internal sealed unsafe class FaultAddressDecoder
{
    private readonly GuestMemoryView _memory;
    private readonly InstructionBytes _bytes = new();
    private readonly Decoder _decoder;
    private ulong _cachedRip = ulong.MaxValue;
    private ulong _cachedPhys;
    private Instruction _cached;

    public FaultAddressDecoder(GuestMemoryView memory)
    {
        _memory = memory;
        _decoder = Decoder.Create(64, _bytes, DecoderOptions.None);
    }

    /// <summary>
    /// Runs Iced's one-time decoder set-up (its opcode handler tables, about 0.5 MiB built on first use) on the calling
    /// thread, so that it is not paid by the first vCPU thread to start under an exit engine, on its way to KVM_RUN.
    /// </summary>
    public static void Prepare() => _ = Decoder.Create(64, new InstructionBytes(), DecoderOptions.None);

    /// <summary>Writes up to <paramref name="gpas"/>.Length candidate GPAs (one per memory operand) and returns how many.</summary>
    public int Candidates(in KvmRegs r, in KvmSregs s, Span<ulong> gpas) => Candidates(r, s.Cr3, s.Fs.Base, s.Gs.Base, gpas);

    /// <summary>As above with the few special registers the decode needs.</summary>
    public int Candidates(in KvmRegs r, ulong cr3, ulong fsBase, ulong gsBase, Span<ulong> gpas)
    {
        if (!Decode(r.Rip, cr3)) return 0;
        ref readonly var ins = ref _cached;
        var n = 0;
        for (var i = 0; i < ins.OpCount && n < gpas.Length; i++)
        {
            ulong gva;
            switch (ins.GetOpKind(i))
            {
                case OpKind.Memory:
                    if (ins.IsIPRelativeMemoryOperand) gva = ins.IPRelativeMemoryAddress;
                    else
                    {
                        gva = ins.MemoryDisplacement64;
                        if (ins.MemoryBase != Register.None) gva += Value(r, ins.MemoryBase);
                        if (ins.MemoryIndex != Register.None) gva += Value(r, ins.MemoryIndex) * (ulong)ins.MemoryIndexScale;
                        if (ins.MemorySegment == Register.FS) gva += fsBase;
                        else if (ins.MemorySegment == Register.GS) gva += gsBase;
                    }
                    break;
                case OpKind.MemorySegRSI: case OpKind.MemorySegESI: gva = r.Rsi; break;
                case OpKind.MemoryESRDI: case OpKind.MemoryESEDI: case OpKind.MemorySegRDI: case OpKind.MemorySegEDI: gva = r.Rdi; break;
                default: continue;
            }
            if (_memory.TryTranslate(cr3, gva, out var gpa)) gpas[n++] = gpa;
        }
        // implicit stack accesses: push/call write below RSP, pop/ret read at RSP
        var inc = ins.StackPointerIncrement;
        if (inc != 0 && n < gpas.Length)
        {
            var gva = inc < 0 ? r.Rsp + (ulong)(long)inc : r.Rsp;
            if (_memory.TryTranslate(cr3, gva, out var gpa)) gpas[n++] = gpa;
        }
        return n;
    }

    private bool Decode(ulong rip, ulong cr3)
    {
        // the cache is keyed by RIP and the physical page of the code: a remapped RIP decodes again
        if (!_memory.TryTranslate(cr3, rip, out var phys)) return false;
        if (rip == _cachedRip && phys == _cachedPhys) return true;
        if (!_bytes.Load(_memory, cr3, rip)) return false;
        _decoder.IP = rip;
        _decoder.Decode(out _cached);
        if (_cached.IsInvalid) { _cachedRip = ulong.MaxValue; return false; }
        _cachedRip = rip;
        _cachedPhys = phys;
        return true;
    }

    private static ulong Value(in KvmRegs r, Register reg)
    {
        var full = reg.GetFullRegister();
        ulong v = full switch
        {
            Register.RAX => r.Rax, Register.RBX => r.Rbx, Register.RCX => r.Rcx, Register.RDX => r.Rdx,
            Register.RSI => r.Rsi, Register.RDI => r.Rdi, Register.RSP => r.Rsp, Register.RBP => r.Rbp,
            Register.R8 => r.R8, Register.R9 => r.R9, Register.R10 => r.R10, Register.R11 => r.R11,
            Register.R12 => r.R12, Register.R13 => r.R13, Register.R14 => r.R14, Register.R15 => r.R15,
            Register.RIP => r.Rip, _ => 0,
        };
        return reg.IsGPR32() ? v & 0xFFFF_FFFF : v;
    }

    /// <summary>Up to 15 instruction bytes copied out of guest memory (possibly across a page boundary).</summary>
    private sealed class InstructionBytes : CodeReader
    {
        private readonly byte[] _buf = new byte[15];
        private int _len, _pos;

        public bool Load(GuestMemoryView memory, ulong cr3, ulong rip)
        {
            _len = 0; _pos = 0;
            while (_len < _buf.Length)
            {
                if (!memory.TryTranslate(cr3, rip + (ulong)_len, out var gpa)) break;
                var p = memory.Pointer(gpa);
                if (p == null) break;
                var inPage = (int)Math.Min(4096 - (gpa & 0xFFF), (ulong)(_buf.Length - _len));
                new ReadOnlySpan<byte>(p, inPage).CopyTo(_buf.AsSpan(_len));
                _len += inPage;
            }
            return _len > 0;
        }

        public override int ReadByte() => _pos < _len ? _buf[_pos++] : -1;
    }
}
