#!/usr/bin/env python3
"""Summarizes bench/bandwidth-sweep.sh: one row per (link, cap) of medians over the runs, with the worst fault.
    bandwidth-summary.py OUT"""
import collections, glob, json, os, statistics as st, sys
rows = collections.defaultdict(list)
for f in glob.glob(os.path.join(sys.argv[1], "link-*.json")):
    link, cap, _ = os.path.basename(f)[5:-5].split(".")
    r = json.load(open(f)); fl = r["fault_latency_us"]
    rows[(link, cap[4:])].append((fl["count"], fl["p50"], fl["p99"], fl["max"], r["postcopy_ms"], r["total_ms"], r["link_rtt_us"]["p50"],
                                  r["guest_mismatches"] == 0 and r["digests_match"]))
print("| link | cap | runs | exact | faults | fault p50 µs | p99 | max (worst) | post-copy ms | total ms | RTT p50 µs |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def rate(cap):   # bytes per second; uncapped first
    return float("inf") if cap == "none" else float(cap.rstrip("KMG")) * 1024 ** (" KMG".index(cap[-1]) if cap[-1] in "KMG" else 0)
for (link, cap), v in sorted(rows.items(), key=lambda kv: (kv[0][0], -rate(kv[0][1]))):
    m = lambda i: st.median(x[i] for x in v)
    print(f"| {'loopback' if link == '0' else '+' + link + ' each way'} | {cap} | {len(v)} | {sum(x[7] for x in v)} | {m(0):,.0f} | {m(1):.0f} | {m(2):,.0f} | "
          f"{m(3):,.0f} ({max(x[3] for x in v):,.0f}) | {m(4):.0f} | {m(5):.0f} | {m(6):.0f} |")
