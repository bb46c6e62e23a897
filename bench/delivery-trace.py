#!/usr/bin/env python3
"""Reads a trace of bench/delivery-trace.sh and prints each time the delivery thread (fl-delay) was off a CPU for
longer than THRESHOLD ms (default 5): how it left the CPU (prev_state: S/D asleep, R preempted), the kernel stack at
the switch-out, who woke it and when, how long it then waited for a CPU and who ran on the CPUs meanwhile; its
stretches on a CPU that long; its long mmap_lock waits. A trace that lost events says so first: its intervals can
then span the gap and are not to be trusted.
    delivery-trace.py TRACE [THRESHOLD_MS]"""
import collections, re, sys
from tracefs import LINE, SWITCH, Timeline

WAKE = re.compile(r'comm=(.*) pid=(\d+) prio=\d+ target_cpu=(\d+)')

def main(path, threshold_ms):
    comm, timeline = {}, Timeline()
    delay = set()
    out = {}                 # pid -> (ts, state, cpu, syscall, stack list)
    woke = {}                # pid -> (ts, waker comm, waker pid)
    gaps, lock_waits = [], []
    lock_start = {}
    stack_for = None         # the switch-out record whose stack lines follow
    lost, on_cpu, stretches = 0, {}, []
    for line in open(path, errors="replace"):
        if "[LOST " in line:
            lost += int(re.search(r"LOST (\d+)", line)[1]); continue
        if line.startswith(" => "):
            if stack_for is not None: stack_for[3].append(line[4:].strip())
            continue
        m = LINE.match(line)
        if not m:
            continue
        ts, pid, cpu, ev, rest = float(m["ts"]), int(m["pid"]), int(m["cpu"]), m["ev"], m["rest"]
        comm.setdefault(pid, m["comm"])
        if ev == "sched_switch":
            s = SWITCH.match(rest)
            if not s: continue
            prev, state, nxt = int(s[2]), s[4], int(s[6])
            comm[prev], comm[nxt] = s[1], s[5]
            timeline.switch(ts, cpu, nxt)
            stack_for = None
            if s[1] == "fl-delay":
                delay.add(prev)
                if prev in on_cpu and (ts - on_cpu[prev]) * 1e3 >= threshold_ms: stretches.append((ts - on_cpu.pop(prev), prev, ts, state))
                rec = (ts, state, cpu, [])
                out[prev] = rec
                stack_for = rec
            if s[5] == "fl-delay": on_cpu[nxt] = ts
            if s[5] == "fl-delay" and nxt in out:
                o = out.pop(nxt)
                gap = ts - o[0]
                if gap * 1e3 >= threshold_ms:
                    gaps.append((gap, nxt, o, woke.get(nxt), ts, cpu))
                woke.pop(nxt, None)
        elif ev == "sched_wakeup":
            w = WAKE.match(rest)
            if w and w[1] == "fl-delay": woke[int(w[2])] = (ts, m["comm"], pid)
        elif ev == "mmap_lock_start_locking": lock_start[pid] = ts
        elif ev == "mmap_lock_acquire_returned" and pid in lock_start:
            t0 = lock_start.pop(pid)
            if (ts - t0) * 1e3 >= 1: lock_waits.append((ts - t0, pid, t0, rest))
    timeline.close()
    if lost: print(f"WARNING: the trace lost {lost} events: intervals spanning a loss are wrong")
    print(f"delivery thread(s): {sorted(delay)}; off-CPU intervals of {threshold_ms} ms or more: {len(gaps)}")
    for gap, p, (t0, state, ocpu, stack), wk, t1, icpu in sorted(gaps, reverse=True)[:20]:
        frames = [f for f in stack if not f.startswith(("__schedule", "schedule", "__traceiter", "trace_"))][:8]
        print(f"\n{gap * 1e3:8.2f} ms off CPU from {t0:.6f} (cpu {ocpu} → {icpu}), left as {state}")
        print(f"    stack: {' < '.join(frames) or '(none)'}")
        if wk:
            wts, wcomm, wpid = wk
            print(f"    woken at +{(wts - t0) * 1e3:.2f} ms by {wcomm}-{wpid}; then waited {(t1 - wts) * 1e3:.2f} ms for a CPU")
            a = wts
        else:
            print("    no wake-up seen (preempted: runnable all along)")
            a = t0
        held = timeline.held(a, t1)
        top = sorted(held.items(), key=lambda kv: -kv[1])[:5]
        print("    meanwhile: " + ", ".join(f"cpu{c} {comm.get(q, q)}-{q} {v * 1e3:.2f} ms" for (c, q), v in top))
    if stretches:
        print(f"\non a CPU for {threshold_ms} ms or more: {len(stretches)}")
        for d, p, t1, st in sorted(stretches, reverse=True)[:10]: print(f"  {d * 1e3:8.2f} ms ending {t1:.6f}, left as {st}")
    if lock_waits:
        print(f"\nmmap_lock waits ≥ 1 ms: {len(lock_waits)}")
        for d, p, t0, r in sorted(lock_waits, reverse=True)[:10]: print(f"  {d * 1e3:8.2f} ms at {t0:.6f}: {r}")

if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
