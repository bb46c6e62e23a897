#!/usr/bin/env python3
"""The post-copy async-PF table: per cell (memory tasks), policy and guest protocol, medians over the repeats, with the
CPU task's progress during post-copy as the headline, each auto run against the never run of the same round."""
import glob, json, os, re, statistics, sys

runs = {}
for f in glob.glob(os.path.join(sys.argv[1], "t*-*-*-*.json")):
    tasks, mode, proto, rep = re.match(r"t(\d+)-(\w+)-(\w+)-(\d+)\.json", os.path.basename(f)).groups()
    runs[(int(tasks), mode, proto, int(rep))] = json.load(open(f))

def med(xs): return statistics.median(xs) if xs else float("nan")

print("| mem tasks | --async-pf | protocol | CPU task M iter/s in post-copy (min–max) | ratio to never (same round) | post-copy ms | downtime ms | fault µs p50 / p99 / max | not present / ready | SDEI entered |")
print("|---|---|---|---|---|---|---|---|---|---|")
for tasks in sorted({k[0] for k in runs}):
    for mode, proto in (("never", "x86"), ("auto", "x86"), ("auto", "arm")):
        keyed = {k: r for k, r in runs.items() if k[:3] == (tasks, mode, proto)}
        rs = [keyed[k] for k in sorted(keyed)]
        if not rs: continue
        cpu = [r["mixed"]["cpu_iter_per_s_postcopy"] / 1e6 for r in rs]
        ratios = [r["mixed"]["cpu_iter_per_s_postcopy"] / runs[(tasks, "never", "x86", k[3])]["mixed"]["cpu_iter_per_s_postcopy"]
                  for k, r in sorted(keyed.items()) if mode == "auto" and (tasks, "never", "x86", k[3]) in runs]
        fl = [r["fault_latency_us"] for r in rs]
        ratio = f"{med(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "1"
        np = f'{med([r["mixed"].get("not_present", 0) for r in rs]):.0f} / {med([r["mixed"].get("ready", 0) for r in rs]):.0f}'
        sdei = f'{med([r["mixed"]["sdei_dispatched"] for r in rs]):.0f}' if "sdei_dispatched" in rs[0]["mixed"] else "–"
        print(f"| {tasks} | {mode} | {proto} | {med(cpu):.0f} ({min(cpu):.0f}–{max(cpu):.0f}) | {ratio} | {med([r['postcopy_ms'] for r in rs]):.0f} "
              f"| {med([r['downtime_ms'] for r in rs]):.1f} "
              f"| {med([x['p50'] for x in fl]):.0f} / {med([x['p99'] for x in fl]):.0f} / {max(x['max'] for x in fl):.0f} | {np} | {sdei} |")
