#!/usr/bin/env bash
# Reproduces docs/migration.md "Current results": runs `./faultline migrate` back to back over the configurations
# there and keeps every run's JSON report in OUT (default ./migration-runs). Run it on an otherwise idle host.
#   bench/migration-batch.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
out="${1:-migration-runs}"
mkdir -p "$out"
run() { # label, repeats, migrate options...
    local label=$1 n=$2; shift 2
    for ((i = 1; i <= n; i++)); do
        "$root/faultline" migrate "$@" --json "$out/$label-$i.json" >/dev/null
        grep -o '"\(downtime_ms\|total_ms\|postcopy_ms\)": *[0-9.]*' "$out/$label-$i.json" | tr '\n' ' '
        echo " <- $label #$i"
    done
}
run 256m 8 --mem 256M
run 1g 5 --mem 1G --baseline
run 2g 3 --mem 2G
run 256m-delay30 5 --mem 256M --link-delay 30us
for e in missing minor bitmap; do run "256m-$e" 2 --mem 256M --engine "$e"; done
run 256m-anon 2 --mem 256M --backing anon
run 256m-netns 2 --mem 256M --netns
# the demand path decides these: a guest that reads and writes uniformly over its memory, not behind the push
run 256m-random 20 --mem 256M --workload random
run 1g-random 20 --mem 1G --workload random
run 256m-random-delay30 5 --mem 256M --workload random --link-delay 30us
