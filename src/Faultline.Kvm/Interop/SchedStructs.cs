using System.Runtime.InteropServices;

namespace Faultline.Kvm.Interop;

/// <summary>struct sched_attr, include/uapi/linux/sched/types.h (SCHED_ATTR_SIZE_VER1 = 56 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 56)]
internal struct SchedAttr
{
    [FieldOffset(0)] public uint Size;
    [FieldOffset(4)] public uint SchedPolicy;
    [FieldOffset(8)] public ulong SchedFlags;
    [FieldOffset(16)] public int SchedNice;
    [FieldOffset(20)] public uint SchedPriority;
    /// <summary>SCHED_OTHER since Linux 6.12: the task's slice (a request, 0.1–100 ms); SCHED_DEADLINE: its runtime.</summary>
    [FieldOffset(24)] public ulong SchedRuntime;
    [FieldOffset(32)] public ulong SchedDeadline;
    [FieldOffset(40)] public ulong SchedPeriod;
    [FieldOffset(48)] public uint SchedUtilMin;
    [FieldOffset(52)] public uint SchedUtilMax;

    public const int SizeVer1 = 56;
}
