#!/usr/bin/env bash
# Reproduces the tables in docs/async-pf.md and docs/async-pf-arm.md: `./faultline bench apf` with sync, x86 and arm
# at every latency, 1 and 2 vCPUs, 1 and 4 memory tasks, 5 interleaved repeats, then the A/B of the ready poll; keeps
# every JSON report and console table in OUT (default ./apf-runs) and prints both docs tables (bench/apf-table.py,
# bench/apf-arm-table.py). Run it on an otherwise idle host.
#   bench/apf-batch.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:-apf-runs}"
mkdir -p "$out"
"$root/faultline" bench apf --latency 30us,100us,1ms,10ms --vcpus 1,2 --mem-tasks 1,4 --protocol x86,arm --repeat 5 \
    --json "$out/apf.json" --svg "$out/apf.svg" >"$out/apf.txt"
for i in 1 2 3; do
    for p in 500us 0; do
        "$root/faultline" bench apf --latency 1ms,10ms --vcpus 1,2 --mem-tasks 1,4 --repeat 1 --ready-poll "$p" \
            --json "$out/poll-$p-$i.json" >"$out/poll-$p-$i.txt"
    done
done
python3 "$root/bench/apf-table.py" "$out/apf.json"
python3 "$root/bench/apf-arm-table.py" "$out/apf.json"
cp "$out/apf.svg" "$root/docs/async-pf-speedup.svg"
