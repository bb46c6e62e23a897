# Sourced by the bench/*-trace.sh scripts: what each does before it traces.
#   tracefs_ready NAME   sets t to the tracefs mount (mounting it if needed), or exits 2 with one line naming NAME
tracefs_ready() {
    t=/sys/kernel/tracing
    [[ -w $t/trace ]] || mount -t tracefs nodev $t 2>/dev/null || { echo "$1: tracefs is not available (needs root)" >&2; exit 2; }
}
