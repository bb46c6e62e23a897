#!/usr/bin/env bash
# Traces the delayed page source's delivery thread (fl-delay) during one faultline command and prints, via
# bench/delivery-trace.py, every time it was off a CPU much longer than its latency: how it left (asleep or
# preempted), the kernel stack it slept in, who woke it, and who held the CPUs meanwhile; and its long stretches on a
# CPU. tracefs: sched_switch/sched_wakeup/sched_migrate_task for all, mmap_lock and a kernel stack at each switch-out
# for fl-delay only (its syscalls are left out: tracing them lost events), streamed from trace_pipe. Needs root.
#   bench/delivery-trace.sh OUT faultline-args…   e.g. bench/delivery-trace.sh /tmp/d bench apf --latency 30us --vcpus 2 --delivery fifo
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: bench/delivery-trace.sh OUT faultline-args...}"; shift
[[ $# -gt 0 ]] || { echo "delivery-trace.sh: say which faultline command to trace" >&2; exit 2; }
source "$root/bench/tracefs.sh"; tracefs_ready delivery-trace.sh
mkdir -p "$out"
"$root/faultline" --help >/dev/null   # a due rebuild of the CLI happens outside the trace
ours=(mmap_lock/mmap_lock_start_locking mmap_lock/mmap_lock_acquire_returned)
cleanup() {
    echo 0 > $t/tracing_on
    echo '!stacktrace if prev_comm == "fl-delay"' > $t/events/sched/sched_switch/trigger 2>/dev/null || true
    for e in sched mmap_lock; do echo 0 > $t/events/$e/enable; done
    for e in "${ours[@]}"; do echo 0 > $t/events/$e/filter; done
    [[ -n "${reader:-}" ]] && kill "$reader" 2>/dev/null || true
    echo > $t/trace
}
trap cleanup EXIT
echo 0 > $t/tracing_on; echo > $t/trace
echo 65536 > $t/buffer_size_kb
echo 1 > $t/options/record-tgid
echo mono > $t/trace_clock
for e in sched/sched_switch sched/sched_wakeup sched/sched_migrate_task "${ours[@]}"; do echo 1 > $t/events/$e/enable; done
for e in "${ours[@]}"; do echo 'comm == "fl-delay"' > $t/events/$e/filter; done
echo 'stacktrace if prev_comm == "fl-delay"' > $t/events/sched/sched_switch/trigger
cat $t/trace_pipe > "$out/trace.txt" & reader=$!
flock -x /tmp/fl-bench.lock bash -c "echo 1 > $t/tracing_on; \"$root/faultline\" $(printf '%q ' "$@") > \"$out/stdout.txt\" 2>&1; echo 0 > $t/tracing_on"
sleep 1; kill "$reader" 2>/dev/null || true; wait "$reader" 2>/dev/null || true; reader=
python3 "$root/bench/delivery-trace.py" "$out/trace.txt"
