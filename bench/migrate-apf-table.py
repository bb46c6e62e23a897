#!/usr/bin/env python3
"""The post-copy async-PF table: per cell (memory tasks) and policy, medians over the repeats, with the CPU task's
progress during post-copy as the headline, each auto run against the never run just before it (same pair)."""
import glob, json, os, re, statistics, sys

runs = {}
for f in glob.glob(os.path.join(sys.argv[1], "t*-*-*.json")):
    tasks, mode, rep = re.match(r"t(\d+)-(\w+)-(\d+)\.json", os.path.basename(f)).groups()
    runs[(int(tasks), mode, int(rep))] = json.load(open(f))

def med(xs): return statistics.median(xs) if xs else float("nan")

print("| mem tasks | --async-pf | CPU task M iter/s in post-copy (min–max) | ratio to never (pairs) | post-copy ms | guest done ms | downtime ms | fault µs p50 / p99 / max | not present / ready |")
print("|---|---|---|---|---|---|---|---|---|")
for tasks in sorted({k[0] for k in runs}):
    for mode in ("never", "auto"):
        rs = [r for (t, m, _), r in sorted(runs.items()) if t == tasks and m == mode]
        if not rs: continue
        cpu = [r["mixed"]["cpu_iter_per_s_postcopy"] / 1e6 for r in rs]
        ratios = []
        if mode == "auto":
            for (t, m, i), r in runs.items():
                if t == tasks and m == "auto" and (t, "never", i) in runs:
                    ratios.append(r["mixed"]["cpu_iter_per_s_postcopy"] / runs[(t, "never", i)]["mixed"]["cpu_iter_per_s_postcopy"])
        fl = [r["fault_latency_us"] for r in rs]
        ratio = f"{med(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "1"
        np = f'{med([r["mixed"].get("not_present", 0) for r in rs]):.0f} / {med([r["mixed"].get("ready", 0) for r in rs]):.0f}'
        print(f"| {tasks} | {mode} | {med(cpu):.0f} ({min(cpu):.0f}–{max(cpu):.0f}) | {ratio} | {med([r['postcopy_ms'] for r in rs]):.0f} "
              f"| {med([r['guest_finished_ms'] for r in rs]):.0f} | {med([r['downtime_ms'] for r in rs]):.1f} "
              f"| {med([x['p50'] for x in fl]):.0f} / {med([x['p99'] for x in fl]):.0f} / {max(x['max'] for x in fl):.0f} | {np} |")
bad = [k for k, r in runs.items() if r["guest_mismatches"] != 0 or not r["digests_match"]]
print(f"\n{len(runs)} runs, {len(bad)} with a mismatch or a digest that differs")
