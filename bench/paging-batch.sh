#!/usr/bin/env bash
# Reproduces docs/bench.md: runs the `./faultline bench paging` commands listed there, each with the C reference
# refpaging interleaved, and keeps every run's JSON report and console table in OUT (default ./paging-runs).
# Run it on an otherwise idle host. refpaging is built from ../shared/reference/refpaging.c if /tmp/refpaging is missing.
#   bench/paging-batch.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:-paging-runs}"
ref=/tmp/refpaging
mkdir -p "$out"
if [[ ! -x $ref ]]; then
    src="$root/../shared/reference/refpaging.c"
    [[ -f $src ]] || { echo "no $ref and no $src to build it from" >&2; exit 3; }
    gcc -O2 -o "$ref" "$src" -lpthread
fi
run() { # label, bench paging options...
    local label=$1; shift
    "$root/faultline" bench paging "$@" --reference "$ref" --json "$out/$label.json" >"$out/$label.txt"
    echo "$label -> $out/$label.json, $out/$label.txt"
}
# Against the C reference: 2 vCPUs x 64 MiB, median of 5, both privilege levels
for level in user kernel; do
    run "ref-anon-$level" --vcpus 2 --mem-per-vcpu 64M --modes none,missing,exits --backing anon --guest-mode "$level" --repeat 5
    run "ref-shmem-$level" --vcpus 2 --mem-per-vcpu 64M --modes none,minor,exits --backing shmem --guest-mode "$level" --repeat 5
    run "ref-pervcpu-$level" --vcpus 2 --mem-per-vcpu 64M --modes missing,exits --uffds per-vcpu --guest-mode "$level" --repeat 5
done
# Scaling: 1, 2, 8, 32 vCPUs x 64 MiB, CPL3, every engine, median of 3 (and the chart docs/bench.md shows)
run scaling --vcpus 1,2,8,32 --mem-per-vcpu 64M --repeat 3 --svg "$out/scaling.svg"
# Finding a CPL3 fault's address: THREAD_ID + kick instead of decode (refpaging has no such row: it is not run)
run exits-threadid --vcpus 1,2 --mem-per-vcpu 64M --modes exits --cpl3-address uffd-thread-id --repeat 5
