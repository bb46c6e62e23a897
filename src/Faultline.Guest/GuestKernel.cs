using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Faultline.Guest;

/// <summary>
/// The tiny CPL0 guest kernel: an IDT whose every vector has a handler. By default a handler reports the exception
/// through the doorbell (op <see cref="GuestOp.Exception"/>, RBX = error code, RCX = RIP, RDX = CR2) and stops, so a
/// guest fault becomes a typed error on the host instead of a triple fault. Later mechanisms install their own
/// handlers per vector with <see cref="SetHandler"/>. Handler code must be SSE-free (CPL0 is emulated here).
/// </summary>
public sealed class GuestKernel
{
    private static readonly HashSet<int> VectorsWithErrorCode = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
    private readonly Dictionary<int, (Action<Assembler> Body, bool UserCallable)> _custom = [];
    private readonly List<(string Name, Action<Assembler> Body)> _routines = [];

    /// <summary>Installs a custom handler for a vector. The body runs on the vector's entry stack frame (error code popped already if any).</summary>
    public void SetHandler(int vector, Action<Assembler> body, bool userCallable = false) => _custom[vector] = (body, userCallable);

    /// <summary>
    /// Adds code that is not a vector's handler (a boot stub, an idle loop, task code), emitted after the handlers in
    /// the order added; <see cref="GuestImage.RoutineOf"/> gives its address. Every body of one kernel is emitted into the
    /// same assembler, so bodies may share labels (created by the first body that runs).
    /// </summary>
    public void AddRoutine(string name, Action<Assembler> body) => _routines.Add((name, body));

    internal (byte[] Code, ulong[] HandlerAddresses, bool[] UserCallable, Dictionary<string, ulong> Routines) Build(ulong rip)
    {
        var a = new Assembler(64);
        var labels = new Label[256];
        var report = a.CreateLabel("report");
        for (var v = 0; v < 256; v++)
        {
            labels[v] = a.CreateLabel($"vec{v}");
            a.Label(ref labels[v]);
            if (_custom.TryGetValue(v, out var custom))
            {
                if (VectorsWithErrorCode.Contains(v)) a.add(rsp, 8);
                custom.Body(a);
                continue;
            }
            if (!VectorsWithErrorCode.Contains(v)) a.push(0);
            a.push(v);
            a.jmp(report);
        }
        // [rsp] = vector, [rsp+8] = error code, [rsp+16] = RIP of the faulting instruction
        a.Label(ref report);
        a.mov(rax, __qword_ptr[rsp]);
        a.mov(rbx, __qword_ptr[rsp + 8]);
        a.mov(rcx, __qword_ptr[rsp + 16]);
        a.mov(rdx, cr2);
        a.mov(rsi, GuestLayout.Doorbell + 8 * (ulong)GuestOp.Exception);
        a.mov(__qword_ptr[rsi], rax);
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.jmp(hang);
        var routines = new Label[_routines.Count];
        for (var i = 0; i < routines.Length; i++)
        {
            routines[i] = a.CreateLabel(_routines[i].Name);
            a.Label(ref routines[i]);
            a.nop();   // the body may start with a label of its own (one label per instruction)
            _routines[i].Body(a);
        }

        var (bytes, result) = CodeBlob.Assemble(a, rip);
        var addrs = new ulong[256];
        var user = new bool[256];
        for (var v = 0; v < 256; v++)
        {
            addrs[v] = result.GetLabelRIP(labels[v]);
            user[v] = _custom.TryGetValue(v, out var c) && c.UserCallable;
        }
        var named = new Dictionary<string, ulong>();
        for (var i = 0; i < routines.Length; i++) named[_routines[i].Name] = result.GetLabelRIP(routines[i]);
        return (bytes, addrs, user, named);
    }
}
