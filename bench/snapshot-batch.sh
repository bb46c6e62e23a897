#!/usr/bin/env bash
# Reproduces docs/snapshot.md "Current results": saves snapshots, runs `./faultline snapshot restore … --json` over the
# configurations there and keeps every run's JSON report in OUT (default ./snapshot-runs); then summarize with
#   bench/snapshot-summary.py OUT
# Snapshots go to SNAPDIR (default /tmp/fl-snapshot-bench, about 5 GiB on disk). Run it on an otherwise idle host.
#   bench/snapshot-batch.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:-snapshot-runs}"
snaps="${SNAPDIR:-/tmp/fl-snapshot-bench}"
mkdir -p "$out"
rm -rf "$snaps" && mkdir -p "$snaps"
save() { "$root/faultline" snapshot save "$snaps/$1" "${@:2}" --json "$out/save-$1.json" >/dev/null; }
run() { # label, snapshot, repeats, restore options...
    local label=$1 snap=$2 n=$3; shift 3
    for ((i = 1; i <= n; i++)); do
        "$root/faultline" snapshot restore "$snaps/$snap" "$@" --json "$out/$label-$i.json" >/dev/null
        grep -o '"\(first_instruction_ms\|resident_ms\|eager_first_instruction_ms\|pages_demand\)": *[0-9.]*' "$out/$label-$i.json" | tr '\n' ' '
        echo " <- $label #$i"
    done
}
save 256m --vcpus 2 --mem 256M
save 2g --vcpus 2 --mem 2G
save 1g --vcpus 2 --mem 1G
save 4g --vcpus 2 --mem 4G   # the largest guest the layout maps
for e in exits missing minor bitmap; do run "256m-$e" 256m 5 --engine "$e" --no-record; done
for e in exits missing; do run "2g-$e" 2g 3 --engine "$e" --no-record; done
run 4g-exits 4g 3 --engine exits --no-record --no-eager
# working-set replay: the first restore records (the fill waits for the guest), the next ones replay
save 256m-ws --vcpus 2 --mem 256M
run 256m-record 256m-ws 1 --engine exits --no-eager
run 256m-replay 256m-ws 5 --engine exits --no-eager
run 256m-count8 256m 2 --engine exits --no-record --no-eager --count 8
run 1g-count8 1g 2 --engine exits --no-record --no-eager --count 8
