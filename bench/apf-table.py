#!/usr/bin/env python3
"""Prints docs/async-pf.md's results table from a `bench apf --json` report, and which goals the run met."""
import json, sys

rows = json.load(open(sys.argv[1]))["rows"]
cell = {}
for r in rows:
    if r["protocol"] in ("sync", "x86"):   # the arm protocol's rows: bench/apf-arm-table.py
        cell.setdefault((r["latency_us"], r["vcpus"], r["mem_tasks"]), {})[r["policy"]] = r

def lat(us):
    return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"

print("| latency | vCPUs | mem tasks | sync s | always | auto (async faults) | ideal | notify p50 / p99 / max (always) | not present / ready p50 (always) |")
print("|---|---|---|---|---|---|---|---|---|")
goals = []
for (l, v, m), c in sorted(cell.items()):
    s, a, u = c["never"], c["always"], c["auto"]
    print(f"| {lat(l)} | {v} | {m} | {s['seconds']:.3f} | {a['speedup']:.2f}x | {u['speedup']:.2f}x ({u['not_present']}) | {a['ideal_speedup']:.1f}x "
          f"| {a['notify_us_p50']:.0f} / {a['notify_us_p99']:.0f} / {a['notify_us_max']:.0f} | {a['not_present_us_p50']:.0f} / {a['ready_us_p50']:.0f} |")
    best = max(1.0, a["speedup"])
    goals.append((f"auto within 5% of the better, {lat(l)} {v} vCPU {m} mem", u["speedup"] >= 0.95 * best, f"{u['speedup']:.2f} vs {best:.2f}"))
    if l == 10000 and v == 1:
        if m == 1:
            goals.append(("10 ms 1 vCPU 1 mem: >= 1.4x", a["speedup"] >= 1.4, f"{a['speedup']:.2f}x"))
            goals.append(("10 ms 1 vCPU 1 mem: within 10% of ideal", a["speedup"] >= 0.9 * a["ideal_speedup"], f"{a['speedup']:.2f} of {a['ideal_speedup']:.1f}"))
        if m == 4:
            goals.append(("10 ms 1 vCPU 4 mem: >= 3x", a["speedup"] >= 3, f"{a['speedup']:.2f}x"))
print()
for g, ok, why in goals:
    print(f"{'met    ' if ok else 'NOT met'}  {g}: {why}")
print(f"guest mismatches: {sum(r['guest_mismatches'] for r in rows)}")
