#!/usr/bin/env bash
# Link-loss load test (issue 14): N migrations of a --workload random guest, each with one link cut at a random point
# of the post-copy (--inject cut-link), with an emulated link delay; one JSON per run in OUT, a summary line per run.
# usage: bench/migrate-cuts.sh OUT [RUNS=10] [MEM=2G] [DELAY=30us] [FAULTLINE="./faultline"]
set -euo pipefail
out=${1:?output folder}; runs=${2:-10}; mem=${3:-2G}; delay=${4:-30us}; fl=${5:-./faultline}
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  f="$out/run-$i.json"
  if $fl migrate --mem "$mem" --vcpus 2 --workload random --link-delay "$delay" --inject cut-link --json "$f" > "$out/run-$i.txt" 2>&1; then rc=0; else rc=$?; fi
  python3 - "$f" "$i" "$rc" <<'PY'
import json, sys
f, i, rc = sys.argv[1], sys.argv[2], sys.argv[3]
try: r = json.load(open(f))
except Exception as e: print(f"run {i}: exit {rc}, no report ({e})"); sys.exit(0)
if "failure" in r: print(f"run {i}: exit {rc}, FAILED {r['failure']}"); sys.exit(0)
rj = r.get("rejoins", [])
print(f"run {i}: exit {rc} reconnects {r['reconnects']} recovery_ms {r['recovery_ms']} asked_again {sum(x['pages_asked_again'] for x in rj)} "
      f"sent_again {sum(x['pages_sent_again'] for x in rj)} digests_match {r['digests_match']} mismatches {r['guest_mismatches']} "
      f"total_ms {r['total_ms']} fault p50/p99/max {r['fault_latency_us']['p50']}/{r['fault_latency_us']['p99']}/{r['fault_latency_us']['max']} injected {r.get('injected')}")
PY
done
