#!/usr/bin/env bash
# Issue 14's "no lost wake-ups": N (default 50) migrations of a 256 MiB random-order guest over a link with 30 µs of
# emulated delay each way, each under the benchmark lock, every JSON report kept in OUT; then bench/wakeup-summary.py
# prints per run the link RTT, the fault latency tail and whether any fault waited over 10x the round trip, and for
# those how the wait splits (demand: requested → installed; wake: installed → vCPU back; waits long enough for the
# page tracker's timed wait to have expired).
#   bench/wakeup-trace.sh OUT [N]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: bench/wakeup-trace.sh OUT [N]}"
n="${2:-50}"
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "wakeup-trace.sh: N must be a positive number of runs, not '$n'" >&2; exit 2; }
mkdir -p "$out"
"$root/faultline" migrate --help >/dev/null   # a rebuild of the CLI, if one is due, happens outside the timed runs
for ((i = 1; i <= n; i++)); do
    flock -x /tmp/fl-bench.lock "$root/faultline" migrate --mem 256M --link-delay 30us --workload random --json "$out/run-$i.json" >/dev/null
    echo "run $i of $n done" >&2
done
python3 "$root/bench/wakeup-summary.py" "$out"/run-*.json
