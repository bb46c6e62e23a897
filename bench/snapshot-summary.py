#!/usr/bin/env python3
"""Summarizes `faultline snapshot restore --json` reports (the OUT of bench/snapshot-batch.sh): per label (the file
name up to its last '-'), the median and the max over runs of each time, and the fault latency's median p50/p99 and
largest max. Targets of issue 13: first_instruction_ms <= 5 at 256 MiB and 4 GiB; replay >= 5x fewer demand faults."""
import glob, json, os, statistics, sys, collections

def rows(paths):
    for p in sorted(paths):
        name = os.path.basename(p)[:-5]
        if name.startswith("save-"): continue
        r = json.load(open(p))
        f = r["fault_latency_us"]
        c = r.get("concurrent")
        yield name.rsplit("-", 1)[0], dict(
            mib=r["mem_bytes"] >> 20, engine=r["engine"], first=r["first_instruction_ms"], resident=r["resident_ms"],
            done=r["guest_done_ms"], eager=r.get("eager_first_instruction_ms"), demand=r["pages_demand"] + r["pages_demand_zero"],
            prefetched=r["pages_prefetched"], avoided=r["faults_avoided_by_replay"], p50=f["p50"], p99=f["p99"], max=f["max"],
            at=f["measured_at"], mism=r["guest_mismatches"], fill=r["fill"]["gib_per_second"],
            count_ratio=c["ratio_to_one"] if c else None, count_ms=c["all_done_ms"] if c else None)

def main(paths):
    groups = collections.defaultdict(list)
    for label, r in rows(paths): groups[label].append(r)
    cols = ["label", "runs", "MiB", "engine", "first_med", "first_max", "eager_first_med", "resident_med", "resident_max",
            "done_med", "demand_med", "avoided_med", "fault_at", "p50_med", "p99_med", "max_max", "fill_gibs_med", "count_ratio_med", "mismatches"]
    print("\t".join(cols))
    for g, rs in groups.items():
        med = lambda k: round(statistics.median(x[k] for x in rs if x[k] is not None), 1) if any(x[k] is not None for x in rs) else "—"
        mx = lambda k: round(max(x[k] for x in rs), 1)
        print("\t".join(str(v) for v in [g, len(rs), rs[0]["mib"], rs[0]["engine"], med("first"), mx("first"), med("eager"),
              med("resident"), mx("resident"), med("done"), med("demand"), med("avoided"), rs[0]["at"], med("p50"), med("p99"),
              mx("max"), med("fill"), med("count_ratio"), sum(x["mism"] for x in rs)]))

if __name__ == "__main__":
    main(glob.glob(os.path.join(sys.argv[1] if len(sys.argv) > 1 else "snapshot-runs", "*.json")))
