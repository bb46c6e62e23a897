#!/usr/bin/env bash
# Reproduces the post-copy table of docs/async-pf.md: `./faultline migrate --workload mixed` under --async-pf never and
# auto with each guest protocol (x86, arm), side by side, interleaved run by run, REPEAT times (default 5) per cell
# (memory tasks 1 and 4, a 1 ms link), keeps every JSON report in OUT (default ./migrate-apf-runs) and prints the table
# (bench/migrate-apf-table.py). Run it on an otherwise idle host.
#   bench/migrate-apf.sh [OUT] [REPEAT] [PROTOCOLS="x86 arm"]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:-migrate-apf-runs}"
repeat="${2:-5}"
protocols="${3:-x86 arm}"
mkdir -p "$out"
"$root/faultline" probe >/dev/null   # builds the CLI once, outside the timed runs
for i in $(seq 1 "$repeat"); do
    for tasks in 1 4; do
        "$root/faultline" migrate --workload mixed --mem-tasks "$tasks" --async-pf never --link-delay 1ms --mem 256M \
            --json "$out/t$tasks-never-x86-$i.json" >"$out/t$tasks-never-x86-$i.txt" 2>&1
        for p in $protocols; do
            "$root/faultline" migrate --workload mixed --mem-tasks "$tasks" --async-pf auto --protocol "$p" --link-delay 1ms --mem 256M \
                --json "$out/t$tasks-auto-$p-$i.json" >"$out/t$tasks-auto-$p-$i.txt" 2>&1
        done
    done
done
python3 "$root/bench/migrate-apf-table.py" "$out"
