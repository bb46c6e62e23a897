#!/usr/bin/env bash
# The post-copy push's byte-rate cap against the fault-latency tail: N interleaved rounds of `faultline migrate`
# (256 MiB, random order, 2 vCPUs), each round one run per cap and per link, every run under the benchmark lock; then a
# row per (link, cap): medians of faults, fault p50/p99/max, post-copy and total time, and the worst max.
#   bench/bandwidth-sweep.sh OUT [N] [CAPS]       CAPS: comma-separated --max-postcopy-bandwidth values, "none" = uncapped
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: bench/bandwidth-sweep.sh OUT [N] [CAPS]}"
n="${2:-5}"
caps="${3:-none,1G,500M,250M}"
mkdir -p "$out"
"$root/faultline" migrate --help >/dev/null   # a due rebuild of the CLI happens outside the timed runs
for ((i = 1; i <= n; i++)); do
    for link in 0 30us; do
        for cap in ${caps//,/ }; do
            extra=(); [[ $cap == none ]] || extra=(--max-postcopy-bandwidth "$cap")
            flock -x /tmp/fl-bench.lock "$root/faultline" migrate --mem 256M --workload random --link-delay "$link" "${extra[@]}" \
                --json "$out/link-$link.cap-$cap.run-$i.json" >/dev/null
        done
    done
    echo "round $i of $n done" >&2
done
python3 "$root/bench/bandwidth-summary.py" "$out"
