using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Interop;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;

namespace Faultline.Migration.Protocol;

/// <summary>
/// The paused guest's vCPUs, extensible per vCPU:
/// <code>
/// i64 pause timestamp (ns, CLOCK_MONOTONIC of the source), u16 state version, u16 vCPU count, u32 reserved
/// per vCPU: u16 id, u16 section count, then sections: u16 tag, u16 flags (bit 0: optional), u32 length, bytes
/// </code>
/// Regs, sregs and events are the kernel's x86-64 structs byte for byte (their length is checked). A reader
/// refuses an unknown section unless it is flagged optional, so a later version that adds guest-visible state can't
/// be silently half-restored by this one. The async-PF registration and the task kernel's state are required sections
/// of the vCPUs whose guest has them (<see cref="GuestStateCodec"/>).
/// </summary>
public static class VcpuStateMessage
{
    public const int MinSize = 16;
    public const ushort StateVersion = 1;

    public static byte[] Encode(long pauseTimestampNs, IReadOnlyList<VcpuState> vcpus)
    {
        var size = MinSize;
        foreach (var v in vcpus)
            size += 4 + 3 * 8 + Unsafe.SizeOf<KvmRegs>() + Unsafe.SizeOf<KvmSregs>() + Unsafe.SizeOf<KvmVcpuEvents>()
                + v.UnknownOptional.Sum(s => 8 + s.Data.Length);
        var extra = vcpus.Select(v => (AsyncPf: v.AsyncPf is { } a ? GuestStateCodec.Encode(a) : null, Tasks: v.TaskKernel is { } t ? GuestStateCodec.Encode(t) : null,
            Sdei: v.Sdei is { } e ? GuestStateCodec.Encode(e) : null)).ToArray();
        foreach (var (a, t, e) in extra) size += (a is null ? 0 : 8 + a.Length) + (t is null ? 0 : 8 + t.Length) + (e is null ? 0 : 8 + e.Length);
        var buf = new byte[size];
        var d = buf.AsSpan();
        BinaryPrimitives.WriteInt64LittleEndian(d, pauseTimestampNs);
        BinaryPrimitives.WriteUInt16LittleEndian(d[8..], StateVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(d[10..], (ushort)vcpus.Count);
        var o = MinSize;
        for (var i = 0; i < vcpus.Count; i++)
        {
            var v = vcpus[i];
            var (apf, tasks, sdei) = extra[i];
            var sections = 3 + v.UnknownOptional.Count + (apf is null ? 0 : 1) + (tasks is null ? 0 : 1) + (sdei is null ? 0 : 1);
            BinaryPrimitives.WriteUInt16LittleEndian(d[o..], (ushort)v.Id);
            BinaryPrimitives.WriteUInt16LittleEndian(d[(o + 2)..], (ushort)sections);
            o += 4;
            o = Section(d, o, StateSection.Regs, 0, MemoryMarshal.AsBytes(new ReadOnlySpan<KvmRegs>(in v.Regs)));
            o = Section(d, o, StateSection.Sregs, 0, MemoryMarshal.AsBytes(new ReadOnlySpan<KvmSregs>(in v.Sregs)));
            o = Section(d, o, StateSection.Events, 0, MemoryMarshal.AsBytes(new ReadOnlySpan<KvmVcpuEvents>(in v.Events)));
            if (apf is not null) o = Section(d, o, StateSection.AsyncPf, 0, apf);
            if (tasks is not null) o = Section(d, o, StateSection.TaskKernel, 0, tasks);
            if (sdei is not null) o = Section(d, o, StateSection.Sdei, 0, sdei);
            foreach (var (tag, data) in v.UnknownOptional) o = Section(d, o, tag, StateSection.Optional, data);
        }
        return buf;
    }

    private static int Section(Span<byte> d, int o, ushort tag, ushort flags, ReadOnlySpan<byte> data)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(d[o..], tag);
        BinaryPrimitives.WriteUInt16LittleEndian(d[(o + 2)..], flags);
        BinaryPrimitives.WriteInt32LittleEndian(d[(o + 4)..], data.Length);
        data.CopyTo(d[(o + 8)..]);
        return o + 8 + data.Length;
    }

    public static (long PauseTimestampNs, VcpuState[] Vcpus) Decode(ReadOnlySpan<byte> d, int expectedVcpus)
    {
        if (d.Length < MinSize) throw new MigrationException("vCPU state frame is truncated");
        var pause = BinaryPrimitives.ReadInt64LittleEndian(d);
        var version = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
        if (version != StateVersion) throw new MigrationException($"vCPU state version {version} is not understood (this build reads version {StateVersion})");
        var count = BinaryPrimitives.ReadUInt16LittleEndian(d[10..]);
        if (count != expectedVcpus) throw new MigrationException($"vCPU state has {count} vCPU(s), the layout said {expectedVcpus}");
        var result = new VcpuState[count];
        var o = MinSize;
        for (var i = 0; i < count; i++)
        {
            Need(d, o, 4);
            var id = BinaryPrimitives.ReadUInt16LittleEndian(d[o..]);
            var sections = BinaryPrimitives.ReadUInt16LittleEndian(d[(o + 2)..]);
            o += 4;
            if (id != i) throw new MigrationException($"vCPU state: entry {i} is for vCPU {id}");
            KvmRegs regs = default; KvmSregs sregs = default; KvmVcpuEvents events = default;
            var seen = 0;
            AsyncPfVcpuState? apf = null;
            TaskSystemState? tasks = null;
            ArmSdeiRegistration? sdei = null;
            var unknown = new List<(ushort, byte[])>();
            for (var s = 0; s < sections; s++)
            {
                Need(d, o, 8);
                var tag = BinaryPrimitives.ReadUInt16LittleEndian(d[o..]);
                var flags = BinaryPrimitives.ReadUInt16LittleEndian(d[(o + 2)..]);
                var len = BinaryPrimitives.ReadInt32LittleEndian(d[(o + 4)..]);
                if (len < 0) throw new MigrationException($"vCPU {id} state: section 0x{tag:x4} has a negative length");
                o += 8;
                Need(d, o, len);
                var data = d.Slice(o, len);
                o += len;
                switch (tag)
                {
                    case StateSection.Regs: regs = Read<KvmRegs>(data, id, "regs"); seen |= 1; break;
                    case StateSection.Sregs: sregs = Read<KvmSregs>(data, id, "sregs"); seen |= 2; break;
                    case StateSection.Events: events = Read<KvmVcpuEvents>(data, id, "events"); seen |= 4; break;
                    case StateSection.AsyncPf when apf is null: apf = GuestStateCodec.DecodeAsyncPf(data, id); break;
                    case StateSection.TaskKernel when tasks is null: tasks = GuestStateCodec.DecodeTaskKernel(data, id); break;
                    case StateSection.Sdei when sdei is null: sdei = GuestStateCodec.DecodeSdei(data, id); break;
                    case StateSection.AsyncPf or StateSection.TaskKernel or StateSection.Sdei: throw new MigrationException($"vCPU {id} state: section 0x{tag:x4} appears twice");
                    default:
                        if ((flags & StateSection.Optional) == 0)
                            throw new MigrationException($"vCPU {id} state: section 0x{tag:x4} is not understood by this version and is not optional");
                        unknown.Add((tag, data.ToArray()));
                        break;
                }
            }
            if (seen != 7) throw new MigrationException($"vCPU {id} state lacks {((seen & 1) == 0 ? "regs" : (seen & 2) == 0 ? "sregs" : "events")}");
            result[i] = new VcpuState { Id = id, Regs = regs, Sregs = sregs, Events = events, AsyncPf = apf, TaskKernel = tasks, Sdei = sdei, UnknownOptional = unknown };
        }
        if (o != d.Length) throw new MigrationException($"vCPU state frame has {d.Length - o} trailing bytes");
        return (pause, result);
    }

    private static void Need(ReadOnlySpan<byte> d, int o, int n)
    {
        if ((long)o + n > d.Length) throw new MigrationException("vCPU state frame is truncated inside a section");
    }

    private static T Read<T>(ReadOnlySpan<byte> data, int id, string what) where T : unmanaged
    {
        if (data.Length != Unsafe.SizeOf<T>()) throw new MigrationException($"vCPU {id} state: {what} is {data.Length} bytes, not {Unsafe.SizeOf<T>()}");
        return MemoryMarshal.Read<T>(data);
    }
}
