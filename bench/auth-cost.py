#!/usr/bin/env python3
"""What authentication and TLS cost a post-copy: `faultline migrate --mem SIZE` plain (--insecure), with the
pre-shared key only (--psk-file, --tls off) and with TLS (--tls on), interleaved, N rounds. Each run is wrapped in
flock /tmp/fl-bench.lock. Prints one line per run and a summary table (medians; fault p99 and max: median and worst).
Usage: bench/auth-cost.py [FAULTLINE_DLL] [ROUNDS] [SIZE] [OUT_DIR]"""
import json, os, resource, statistics, subprocess, sys, tempfile, time

dll = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fl-auth/faultline.dll"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
size = sys.argv[3] if len(sys.argv) > 3 else "1G"
out = sys.argv[4] if len(sys.argv) > 4 else tempfile.mkdtemp(prefix="fl-auth-cost-")
os.makedirs(out, exist_ok=True)
key = os.path.join(out, "key")
if not os.path.exists(key):
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode()); os.close(fd)
modes = {"plain": ["--insecure"], "psk": ["--psk-file", key, "--tls", "off"], "tls": ["--psk-file", key, "--tls", "on"]}
rows = {m: [] for m in modes}
for r in range(rounds):
    for m, extra in modes.items():
        js = os.path.join(out, f"{m}-{r}.json")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = subprocess.run(["flock", "/tmp/fl-bench.lock", "dotnet", dll, "migrate", "--mem", size, "--json", js, *extra],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            print(f"{m} round {r}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}", flush=True); continue
        d = json.load(open(js))
        src = d.get("source") or {}
        f = d["fault_latency_us"]
        row = dict(total=d["total_ms"], postcopy=d["postcopy_ms"], downtime=d["downtime_ms"], p50=f["p50"], p99=f["p99"], max=f["max"],
                   rx_cpu=d.get("bulk_receiver_cpu_ms"), push_cpu=src.get("push_cpu_ms"),
                   cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall=wall,
                   bytes=d.get("bytes_on_wire"), ok=d["digests_match"] and d["guest_mismatches"] == 0, security=d["link"]["security"])
        rows[m].append(row)
        print(f"{m:5} round {r}: total {row['total']:.0f} ms, postcopy {row['postcopy']:.0f} ms, fault p50/p99/max {row['p50']:.0f}/{row['p99']:.0f}/{row['max']:.0f} us, "
              f"rx cpu {row['rx_cpu']} ms, push cpu {row['push_cpu']} ms, process cpu {row['cpu']:.2f} s, ok {row['ok']}, {row['security']}", flush=True)
med = lambda m, k: statistics.median(x[k] for x in rows[m] if x[k] is not None) if rows[m] else float("nan")
worst = lambda m, k: max(x[k] for x in rows[m]) if rows[m] else float("nan")
print(f"\n| mode | runs | total ms | postcopy ms | downtime ms | fault p50 us | p99 us (worst) | max us (worst) | dest rx CPU ms | source push CPU ms | process CPU s (both ends) | total / plain |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for m in modes:
    print(f"| {m} | {len(rows[m])} | {med(m,'total'):.0f} | {med(m,'postcopy'):.0f} | {med(m,'downtime'):.1f} | {med(m,'p50'):.0f} | {med(m,'p99'):.0f} ({worst(m,'p99'):.0f}) | "
          f"{med(m,'max'):.0f} ({worst(m,'max'):.0f}) | {med(m,'rx_cpu'):.0f} | {med(m,'push_cpu'):.0f} | {med(m,'cpu'):.2f} | {med(m,'total')/med('plain','total'):.2f} |")
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\nruns in {out}")
