#!/usr/bin/env python3
"""Summarizes `faultline migrate --json` reports (e.g. the OUT of bench/migration-batch.sh): one row per run, then
medians per label (the file name up to its last '-'). Targets of issue 10: fault p50 <= RTT p50 + 20 us, p99 <= 4 x RTT
(with emulated delay: 2 x RTT + 100 us), no fault over 2 ms."""
import glob, json, os, statistics, sys, collections

def row(path):
    r = json.load(open(path))
    f, rtt = r["fault_latency_us"], r["link_rtt_us"]["p50"]
    d = r.get("demand_latency_us", {})
    delayed = r["link"]["delay_emulated"]
    p99_target = 2 * rtt + 100 if delayed else 4 * rtt
    return dict(
        run=os.path.basename(path)[:-5], workload=r.get("workload", "?"), mib=r["ram_bytes"] >> 20,
        downtime=r["downtime_ms"], total=r["total_ms"], postcopy=r["postcopy_ms"], faults=f["count"],
        p50=f["p50"], p99=f["p99"], max=f["max"], rtt=rtt, demand_p50=d.get("p50"), demand_p99=d.get("p99"), demand_max=d.get("max"),
        p50_ok=f["p50"] <= rtt + 20, p99_ok=f["p99"] <= p99_target, max_ok=f["max"] <= 2000,
        exact=r["guest_mismatches"] == 0 and r["digests_match"])

def main(paths):
    rows = [row(p) for p in sorted(paths)]
    keys = ["run", "workload", "mib", "downtime", "total", "postcopy", "faults", "rtt", "p50", "p99", "max",
            "demand_p50", "demand_p99", "demand_max", "p50_ok", "p99_ok", "max_ok", "exact"]
    print("\t".join(keys))
    for r in rows: print("\t".join(str(round(r[k], 1) if isinstance(r[k], float) else r[k]) for k in keys))
    groups = collections.defaultdict(list)
    for r in rows: groups[r["run"].rsplit("-", 1)[0]].append(r)
    print("\nlabel\truns\tdowntime_med\ttotal_med\tp50_med\tp99_med\tmax_med\tmax_max\trtt_med\tp50_ok\tp99_ok\tmax_ok\texact")
    for g, rs in groups.items():
        med = lambda k: round(statistics.median(x[k] for x in rs), 1)
        n = lambda k: f"{sum(x[k] for x in rs)}/{len(rs)}"
        print("\t".join(map(str, [g, len(rs), med("downtime"), med("total"), med("p50"), med("p99"), med("max"),
                                  round(max(x["max"] for x in rs), 1), med("rtt"), n("p50_ok"), n("p99_ok"), n("max_ok"), n("exact")])))

if __name__ == "__main__":
    main(sys.argv[1:] or glob.glob("migration-runs/*.json"))
