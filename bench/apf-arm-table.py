#!/usr/bin/env python3
"""Prints docs/async-pf-arm.md's two tables from one or more `bench apf --protocol sync,x86,arm --json` reports (pooled:
speedups are medians of every pair's ratio, sync run over variant run of the same repeat, with their range; notify is
the median of the reports' p50 and the worst of their p99 and max), and how many cells keep arm within 10% of x86.
    apf-arm-table.py REPORT.json [REPORT.json ...]"""
import collections, json, statistics as st, sys

cells = collections.defaultdict(lambda: collections.defaultdict(list))
for path in sys.argv[1:]:
    for r in json.load(open(path))["rows"]:
        cells[(r["latency_us"], r["vcpus"], r["mem_tasks"])][(r["protocol"], r["policy"])].append(r)
if not cells: sys.exit(__doc__)

def lat(us): return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"
def pairs(rs): return [p for r in rs for p in r["pair_speedups"]]
def sp(rs):
    p = pairs(rs)
    return f"{st.median(p):.2f}x ({min(p):.2f}–{max(p):.2f})"
def notify(rs): return f"{st.median(r['notify_us_p50'] for r in rs):.0f} / {max(r['notify_us_p99'] for r in rs):.0f} / {max(r['notify_us_max'] for r in rs):.0f}"
def med(rs, k): return st.median(r[k] for r in rs)

print("| latency | vCPUs | mem tasks | pairs | sync s | x86 always | arm always | arm / x86 | x86 auto (async faults) | arm auto (async faults) | ideal "
      "| notify p50 / p99 / max x86 | notify p50 / p99 / max arm | exits per async fault x86 / arm |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
within = []
for (l, v, m), c in sorted(cells.items()):
    s, xa, aa, xu, au = c[("sync", "never")], c[("x86", "always")], c[("arm", "always")], c[("x86", "auto")], c[("arm", "auto")]
    ratio = st.median(pairs(aa)) / st.median(pairs(xa))
    within.append((abs(ratio - 1) <= 0.10, f"{lat(l)} {v} vCPU {m} mem {ratio:.2f}"))
    print(f"| {lat(l)} | {v} | {m} | {len(pairs(xa))} | {med(s, 'seconds'):.3f} | {sp(xa)} | {sp(aa)} | {ratio:.2f} "
          f"| {st.median(pairs(xu)):.2f}x ({med(xu, 'not_present'):.0f}) | {st.median(pairs(au)):.2f}x ({med(au, 'not_present'):.0f}) | {med(xa, 'ideal_speedup'):.1f}x "
          f"| {notify(xa)} | {notify(aa)} | {med(xa, 'exits_per_async_fault'):.1f} / {med(aa, 'exits_per_async_fault'):.1f} |")
print()
print("| latency | vCPUs | mem tasks | not present p50 / p99 x86 | not present p50 / p99 arm | ready p50 / p99 x86 | ready p50 / p99 arm "
      "| ready post → ACK p50 / p99 x86 | ready post → IRQ_ACK p50 / p99 arm |")
print("|---|---|---|---|---|---|---|---|---|")
def half(rs, k): return f"{med(rs, k + '_p50'):.0f} / {max(r[k + '_p99'] for r in rs):.0f}"
for (l, v, m), c in sorted(cells.items()):
    xa, aa = c[("x86", "always")], c[("arm", "always")]
    print(f"| {lat(l)} | {v} | {m} | {half(xa, 'not_present_us')} | {half(aa, 'not_present_us')} | {half(xa, 'ready_us')} | {half(aa, 'ready_us')} "
          f"| {half(xa, 'ready_post_to_ack_us')} | {half(aa, 'ready_post_to_ack_us')} |")
print()
print(f"arm within 10% of x86's speedup (always): {sum(ok for ok, _ in within)} of {len(within)} cells; outside: "
      + (", ".join(w for ok, w in within if not ok) or "none"))
late = max(r["delivery_late_us_max"] for c in cells.values() for rs in c.values() for r in rs if "delivery_late_us_max" in r) if any(
    "delivery_late_us_max" in r for c in cells.values() for rs in c.values() for r in rs) else None
if late is not None: print(f"latest page delivery past its due time: {late:.0f} µs")
