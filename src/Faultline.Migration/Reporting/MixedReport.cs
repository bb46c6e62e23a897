using System.Text.Json;
using Faultline.Paging.AsyncPf;

namespace Faultline.Migration.Reporting;

/// <summary>
/// The mixed workload's part of a migration report: how the guest's CPU task fared while its memory tasks faulted
/// (the question async page faults answer), and what the async host did.
/// </summary>
public sealed record MixedReport
{
    public required int MemoryTasks { get; init; }
    /// <summary>The destination's --async-pf policy (never, always, auto).</summary>
    public required string AsyncPfPolicy { get; init; }
    /// <summary>The guest's async-PF protocol: "x86" or "arm".</summary>
    public string Protocol { get; init; } = "x86";
    /// <summary>Whether the guest had enabled async page faults when it paused (on vCPU 0).</summary>
    public required bool GuestEnabled { get; init; }
    /// <summary>The CPU task's iterations per second, all vCPUs together, from each vCPU's resume until every page was present.</summary>
    public required double CpuIterPerSecPostcopy { get; init; }
    /// <summary>The same from every page present to the guest's end (the memory tasks' last pass, nothing missing); null when that was under 5 ms.</summary>
    public double? CpuIterPerSecAfter { get; init; }
    /// <summary>arm: SDEI handlers entered, and left by COMPLETE or COMPLETE_AND_RESUME, on every vCPU of the destination (null: x86 or no async host).</summary>
    public (long Dispatched, long Completed)? Sdei { get; init; }
    /// <summary>The async host's counters (null: no async host, --async-pf never).</summary>
    public AsyncPfStats? AsyncPf { get; init; }

    internal void Write(Utf8JsonWriter w)
    {
        w.WriteStartObject("mixed");
        w.WriteNumber("mem_tasks", MemoryTasks);
        w.WriteString("async_pf", AsyncPfPolicy);
        w.WriteString("protocol", Protocol);
        w.WriteBoolean("guest_enabled", GuestEnabled);
        w.WriteNumber("cpu_iter_per_s_postcopy", Math.Round(CpuIterPerSecPostcopy));
        if (CpuIterPerSecAfter is { } after) w.WriteNumber("cpu_iter_per_s_after", Math.Round(after));
        else w.WriteNull("cpu_iter_per_s_after");
        if (AsyncPf is { } a)
        {
            w.WriteNumber("not_present", a.NotPresent);
            w.WriteNumber("ready", a.ReadyDelivered);
            w.WriteNumber("present_at_accept", a.PresentAtAccept);
            w.WriteNumber("halt_waits", a.HaltWaits);
            w.WriteStartObject("sync_because");
            w.WriteNumber("not_enabled", a.SyncNotEnabled);
            w.WriteNumber("interrupts_off", a.SyncInterruptsOff);
            w.WriteNumber("kernel_mode", a.SyncKernelMode);
            w.WriteNumber("limit", a.SyncLimit);
            w.WriteNumber("policy", a.SyncPolicy);
            w.WriteEndObject();
            w.WriteNumber("policy_notify_cost_us", Math.Round(a.PolicyNotifyCostUs, 1));
            if (Sdei is { } e)
            {
                w.WriteNumber("sdei_dispatched", e.Dispatched);
                w.WriteNumber("sdei_completed", e.Completed);
            }
        }
        w.WriteEndObject();
    }
}
