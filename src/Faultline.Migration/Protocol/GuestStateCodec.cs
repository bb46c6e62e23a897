using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Faultline.Guest.Tasks;
using Faultline.Kvm.Interop;
using Faultline.Paging.AsyncPf;
using Faultline.Paging.AsyncPf.Arm;

namespace Faultline.Migration.Protocol;

/// <summary>
/// The wire form of the guest state beyond the kernel's structs (sections of <see cref="VcpuStateMessage"/>):
/// <code>
/// AsyncPf:    u64 enable word (x86 MSR_KVM_ASYNC_PF_EN, arm ENABLE), u64 "page ready" interrupt (x86 MSR_KVM_ASYNC_PF_INT,
///             arm the PPI's vector), u32 token counter, u32 n, n × (u32 token, u8 stage, u8[3] 0, u64 page)
/// TaskKernel: u32 n, n × (u64 GPA, u32 length, bytes)
/// Sdei:       u32 async-PF event number, u8 PE masked, u8 n, u16 0, the handlers' CS and SS (struct kvm_segment,
///             24 bytes each), n × (u32 number, u8 registered, u8 enabled, u8 pending, u8 0, u64 entry, u64 argument)
/// </code>
/// </summary>
public static class GuestStateCodec
{
    private const int MaxRangeBytes = 1 << 22;

    public static byte[] Encode(AsyncPfVcpuState s)
    {
        var d = new byte[24 + 16 * s.Outstanding.Count];
        BinaryPrimitives.WriteUInt64LittleEndian(d, s.EnableMsr);
        BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(8), s.InterruptMsr);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(16), s.TokenCounter);
        BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(20), s.Outstanding.Count);
        for (var i = 0; i < s.Outstanding.Count; i++)
        {
            var o = d.AsSpan(24 + 16 * i);
            BinaryPrimitives.WriteUInt32LittleEndian(o, s.Outstanding[i].Token);
            o[4] = (byte)s.Outstanding[i].Stage;
            BinaryPrimitives.WriteUInt64LittleEndian(o[8..], s.Outstanding[i].Page);
        }
        return d;
    }

    public static AsyncPfVcpuState DecodeAsyncPf(ReadOnlySpan<byte> d, int vcpu)
    {
        if (d.Length < 24) throw Bad(vcpu, "async-PF section is truncated");
        var n = BinaryPrimitives.ReadInt32LittleEndian(d[20..]);
        if (n < 0 || d.Length != 24 + 16L * n) throw Bad(vcpu, $"async-PF section is {d.Length} bytes for {n} outstanding faults");
        var list = new AsyncPfOutstanding[n];
        for (var i = 0; i < n; i++)
        {
            var o = d[(24 + 16 * i)..];
            var stage = o[4];
            if (stage is < (byte)AsyncPfStage.Waiting or > (byte)AsyncPfStage.Delivered) throw Bad(vcpu, $"async-PF fault {i} has stage {stage}");
            list[i] = new AsyncPfOutstanding(BinaryPrimitives.ReadUInt32LittleEndian(o), BinaryPrimitives.ReadUInt64LittleEndian(o[8..]), (AsyncPfStage)stage);
        }
        return new AsyncPfVcpuState(BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt64LittleEndian(d[8..]),
            BinaryPrimitives.ReadUInt32LittleEndian(d[16..]), list);
    }

    public static byte[] Encode(TaskSystemState s)
    {
        var d = new byte[4 + s.Ranges.Sum(r => 12 + r.Bytes.Length)];
        BinaryPrimitives.WriteInt32LittleEndian(d, s.Ranges.Count);
        var o = 4;
        foreach (var (gpa, bytes) in s.Ranges)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(o), gpa);
            BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(o + 8), bytes.Length);
            bytes.CopyTo(d.AsSpan(o + 12));
            o += 12 + bytes.Length;
        }
        return d;
    }

    public static TaskSystemState DecodeTaskKernel(ReadOnlySpan<byte> d, int vcpu)
    {
        if (d.Length < 4) throw Bad(vcpu, "task-kernel section is truncated");
        var n = BinaryPrimitives.ReadInt32LittleEndian(d);
        if (n is < 0 or > 64) throw Bad(vcpu, $"task-kernel section claims {n} ranges");
        var ranges = new List<(ulong, byte[])>(n);
        var o = 4;
        for (var i = 0; i < n; i++)
        {
            if (d.Length - o < 12) throw Bad(vcpu, "task-kernel section is truncated");
            var gpa = BinaryPrimitives.ReadUInt64LittleEndian(d[o..]);
            var len = BinaryPrimitives.ReadInt32LittleEndian(d[(o + 8)..]);
            if (len is < 0 or > MaxRangeBytes || d.Length - o - 12 < len) throw Bad(vcpu, $"task-kernel range {i} has length {len}");
            ranges.Add((gpa, d.Slice(o + 12, len).ToArray()));
            o += 12 + len;
        }
        if (o != d.Length) throw Bad(vcpu, $"task-kernel section has {d.Length - o} trailing bytes");
        return new TaskSystemState(ranges);
    }

    private const int MaxSdeiEvents = 16, SdeiHeader = 56;

    public static byte[] Encode(ArmSdeiRegistration r)
    {
        var events = r.Events.Events;
        var d = new byte[SdeiHeader + 24 * events.Count];
        BinaryPrimitives.WriteUInt32LittleEndian(d, r.AsyncPfEvent);
        d[4] = r.Events.Masked ? (byte)1 : (byte)0;
        d[5] = (byte)events.Count;
        var (cs, ss) = (r.HandlerCs, r.HandlerSs);
        MemoryMarshal.Write(d.AsSpan(8), in cs);
        MemoryMarshal.Write(d.AsSpan(32), in ss);
        for (var i = 0; i < events.Count; i++)
        {
            var o = d.AsSpan(SdeiHeader + 24 * i);
            var e = events[i];
            BinaryPrimitives.WriteUInt32LittleEndian(o, e.Number);
            o[4] = e.Registered ? (byte)1 : (byte)0;
            o[5] = e.Enabled ? (byte)1 : (byte)0;
            o[6] = e.Pending ? (byte)1 : (byte)0;
            BinaryPrimitives.WriteUInt64LittleEndian(o[8..], e.Entry);
            BinaryPrimitives.WriteUInt64LittleEndian(o[16..], e.Arg);
        }
        return d;
    }

    public static ArmSdeiRegistration DecodeSdei(ReadOnlySpan<byte> d, int vcpu)
    {
        if (d.Length < SdeiHeader) throw Bad(vcpu, "SDEI section is truncated");
        int n = d[5];
        if (n > MaxSdeiEvents || d.Length != SdeiHeader + 24 * n) throw Bad(vcpu, $"SDEI section is {d.Length} bytes for {n} events");
        if (d[4] > 1 || d[6] != 0 || d[7] != 0) throw Bad(vcpu, $"SDEI section has header bytes {d[4]} {d[6]} {d[7]}");
        var events = new SdeiEventState[n];
        for (var i = 0; i < n; i++)
        {
            var o = d[(SdeiHeader + 24 * i)..];
            if (o[4] > 1 || o[5] > 1 || o[6] > 1 || o[7] != 0) throw Bad(vcpu, $"SDEI event {i} has flag bytes {o[4]} {o[5]} {o[6]} {o[7]}");
            events[i] = new SdeiEventState(BinaryPrimitives.ReadUInt32LittleEndian(o), o[4] == 1, o[5] == 1, o[6] == 1,
                BinaryPrimitives.ReadUInt64LittleEndian(o[8..]), BinaryPrimitives.ReadUInt64LittleEndian(o[16..]));
        }
        return new ArmSdeiRegistration(BinaryPrimitives.ReadUInt32LittleEndian(d), new SdeiState(d[4] == 1, events),
            MemoryMarshal.Read<KvmSegment>(d[8..]), MemoryMarshal.Read<KvmSegment>(d[32..]));
    }

    private static MigrationException Bad(int vcpu, string what) => new($"vCPU {vcpu} state: {what}");
}
