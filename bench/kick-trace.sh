#!/usr/bin/env bash
# Traces one faultline command (tracefs: scheduler, the kick signal SIGUSR1, ioctl returns, KVM exits) and prints,
# via bench/kick-trace.py, how long each kick of a vCPU thread took to bring it out of KVM_RUN and where the slow ones
# spent the time (on a CPU in the guest, or runnable without one). Needs root.
#   bench/kick-trace.sh OUT faultline-args…     e.g. bench/kick-trace.sh /tmp/k bench apf --latency 1ms --vcpus 2 --mem-tasks 1 --protocol x86 --repeat 1
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:?usage: bench/kick-trace.sh OUT faultline-args...}"; shift
[[ $# -gt 0 ]] || { echo "kick-trace.sh: say which faultline command to trace" >&2; exit 2; }
source "$root/bench/tracefs.sh"; tracefs_ready kick-trace.sh
mkdir -p "$out"
"$root/faultline" --help >/dev/null   # a due rebuild of the CLI happens outside the trace
cleanup() { echo 0 > $t/tracing_on; for e in sched signal raw_syscalls kvm; do echo 0 > $t/events/$e/enable; echo 0 > $t/events/$e/filter 2>/dev/null || true; done; echo 0 > $t/events/raw_syscalls/sys_exit/filter; echo 0 > $t/events/signal/signal_generate/filter; echo > $t/trace; }
trap cleanup EXIT
echo 0 > $t/tracing_on; echo > $t/trace
echo 131072 > $t/buffer_size_kb
echo 1 > $t/options/record-tgid
echo mono > $t/trace_clock
for e in sched/sched_switch sched/sched_wakeup sched/sched_migrate_task signal/signal_generate raw_syscalls/sys_exit kvm/kvm_exit kvm/kvm_entry; do echo 1 > $t/events/$e/enable; done
echo 'sig == 10' > $t/events/signal/signal_generate/filter
echo 'id == 16' > $t/events/raw_syscalls/sys_exit/filter
flock -x /tmp/fl-bench.lock bash -c "echo 1 > $t/tracing_on; \"$root/faultline\" $(printf '%q ' "$@") > \"$out/stdout.txt\" 2>&1; echo 0 > $t/tracing_on"
cat $t/trace > "$out/trace.txt"
python3 "$root/bench/kick-trace.py" "$out/trace.txt"
