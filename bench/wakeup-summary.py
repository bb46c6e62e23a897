#!/usr/bin/env python3
"""Summarizes the reports of bench/wakeup-trace.sh: per run the link RTT p50, the fault latency p99 and max, and whether
any fault waited over 10x the round trip (issue 14). For the worst fault of each run it says where the time went, from
the report's own fields: demand_latency_us (requested -> installed: the link, the source, the receiver) against
wake_latency_us (installed -> the waiting vCPU back at KVM_RUN: its wake-up and its wait for a CPU), the vCPUs' blocked
time against their run-queue time (vcpu_runqueue_ms: runnable, no CPU), and fault_waits_past_wait_timer (faults at least as long as the page tracker's timed wait, 50 ms: only those can
have ended by the timer instead of a wake-up)."""
import json, os, statistics, sys

def row(path):
    r = json.load(open(path))
    f, rtt = r["fault_latency_us"], r["link_rtt_us"]["p50"]
    d, w = r.get("demand_latency_us", {}), r.get("wake_latency_us", {})
    return dict(
        run=os.path.basename(path)[:-5], faults=f["count"], rtt=rtt, p50=f["p50"], p99=f["p99"], max=f["max"],
        over=f["max"] > 10 * rtt, worst_x_rtt=f["max"] / rtt,
        over_count=sum(n for i, n in enumerate(f.get("histogram", [])) if (1 << i) >= 10 * rtt),   # whole buckets above 10x RTT: a lower bound
        demand_max=d.get("max"), wake_p99=w.get("p99"), wake_max=w.get("max"),
        timer_bound=r.get("fault_waits_past_wait_timer"), expiries=r.get("wait_timer_expiries"), by_timer=r.get("waits_ended_by_timer"), blocked_ms=sum(r["vcpu_blocked_ms"]), runq_ms=sum(r.get("vcpu_runqueue_ms", [])), reconnects=r.get("reconnects", 0),
        exact=r["guest_mismatches"] == 0 and r["digests_match"])

def fmt(v):
    return "-" if v is None else str(round(v, 1)) if isinstance(v, float) else str(v)

def main(paths):
    if not paths: sys.exit("wakeup-summary.py: no reports given")
    rows = [row(p) for p in sorted(paths, key=lambda p: (len(p), p))]
    keys = ["run", "faults", "rtt", "p50", "p99", "max", "worst_x_rtt", "over", "over_count", "demand_max", "wake_p99", "wake_max",
            "timer_bound", "expiries", "by_timer", "blocked_ms", "runq_ms", "reconnects", "exact"]
    print("\t".join(keys))
    for r in rows: print("\t".join(fmt(r[k]) for k in keys))
    worst = max(rows, key=lambda r: r["worst_x_rtt"])
    over = [r for r in rows if r["over"]]
    print(f"\nruns {len(rows)}; exact {sum(r['exact'] for r in rows)}; reconnects {sum(r['reconnects'] for r in rows)}")
    print(f"RTT p50 median {statistics.median(r['rtt'] for r in rows):.1f} us (range {min(r['rtt'] for r in rows):.1f}-{max(r['rtt'] for r in rows):.1f})")
    print(f"fault p99 median {statistics.median(r['p99'] for r in rows):.0f} us; max median {statistics.median(r['max'] for r in rows):.0f} us, worst {worst['max']:.0f} us = {worst['worst_x_rtt']:.0f}x RTT ({worst['run']})")
    print(f"runs with a fault over 10x RTT: {len(over)} of {len(rows)}")
    print(f"faults long enough to have ended by the tracker's 50 ms timer: {sum(r['timer_bound'] or 0 for r in rows)}")
    if any(r["expiries"] is not None for r in rows):
        print(f"tracker sleeps that ran out: {sum(r['expiries'] or 0 for r in rows)}; of those with the page already there (a wake-up that never came): {sum(r['by_timer'] or 0 for r in rows)}")
    dm = [r["demand_max"] for r in rows if r["demand_max"] is not None]
    wm = [r["wake_max"] for r in rows if r["wake_max"] is not None]
    if dm: print(f"demand (requested -> installed) max: median {statistics.median(dm):.0f} us, worst {max(dm):.0f} us")
    print(f"vCPUs blocked in faults (sum over vCPUs): median {statistics.median(r['blocked_ms'] for r in rows):.0f} ms; runnable but without a CPU in post-copy: median {statistics.median(r['runq_ms'] for r in rows):.0f} ms")
    if wm: print(f"wake (installed -> vCPU back) max: median {statistics.median(wm):.0f} us, worst {max(wm):.0f} us; p99 median {statistics.median(r['wake_p99'] for r in rows if r['wake_p99'] is not None):.0f} us")

if __name__ == "__main__":
    main(sys.argv[1:])
