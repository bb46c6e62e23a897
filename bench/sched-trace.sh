#!/usr/bin/env bash
# Traces the scheduler (tracefs sched_switch + sched_wakeup, with thread group ids) during one `faultline migrate` and
# prints, via bench/sched-trace.py, the destination vCPUs' longest waits for a CPU (woken or preempted → running again)
# and which threads held the CPUs meanwhile. Needs root (tracefs).
#   bench/sched-trace.sh OUT [migrate options…]     (default: --mem 256M --link-delay 30us --workload random)
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: bench/sched-trace.sh OUT [migrate options...]}"; shift
args=("$@"); [[ ${#args[@]} -gt 0 ]] || args=(--mem 256M --link-delay 30us --workload random)
source "$root/bench/tracefs.sh"; tracefs_ready sched-trace.sh
mkdir -p "$out"
"$root/faultline" migrate --help >/dev/null   # a due rebuild of the CLI happens outside the trace
cleanup() { echo 0 > $t/tracing_on; echo 0 > $t/events/sched/enable; echo > $t/trace; }
trap cleanup EXIT
echo 0 > $t/tracing_on; echo > $t/trace
echo 131072 > $t/buffer_size_kb
echo 1 > $t/options/record-tgid
echo mono > $t/trace_clock
echo 0 > $t/events/sched/enable
for e in sched_switch sched_wakeup sched_wakeup_new; do echo 1 > $t/events/sched/$e/enable; done
flock -x /tmp/fl-bench.lock bash -c "echo 1 > $t/tracing_on; \"$root/faultline\" migrate ${args[*]} --json \"$out/report.json\" > \"$out/stdout.txt\"; echo 0 > $t/tracing_on"
cat $t/trace > "$out/trace.txt"
python3 "$root/bench/sched-trace.py" "$out/trace.txt" "$out/report.json"
