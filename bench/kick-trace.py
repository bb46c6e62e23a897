#!/usr/bin/env python3
"""Reads a tracefs dump of bench/kick-trace.sh and prints, per kick (SIGUSR1 generated for a vCPU thread), the time
until that thread's next ioctl returned (KVM_RUN ending with EINTR), as percentiles; and for the slowest kicks what
the thread did meanwhile: time on a CPU (in the guest, KVM exits seen) and time runnable without a CPU, with what ran
on that CPU instead.
    kick-trace.py TRACE"""
import bisect, collections, re, sys
from tracefs import LINE, SWITCH, Timeline

SIG = re.compile(r'sig=10 errno=\S+ code=\S+ comm=(.*) pid=(\d+) grp=\S+ res=(\d+)')

def pct(v, q): return sorted(v)[min(len(v) - 1, int(q * len(v)))]

def main(path):
    kicks, rets, exits, comm = [], collections.defaultdict(list), collections.defaultdict(list), {}
    timeline = Timeline()
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m: continue
        ts, pid, cpu, ev = float(m["ts"]), int(m["pid"]), int(m["cpu"]), m["ev"]
        comm.setdefault(pid, m["comm"])
        if ev == "sched_switch":
            s = SWITCH.match(m["rest"])
            if not s: continue
            comm[int(s[6])] = s[5]
            timeline.switch(ts, cpu, int(s[6]))
        elif ev == "signal_generate":
            s = SIG.match(m["rest"])
            if s and s[3] == "0": kicks.append((ts, int(s[2]), pid))
        elif ev == "sys_exit": rets[pid].append(ts)
        elif ev == "kvm_exit": exits[pid].append(ts)
    timeline.close()
    if not kicks: sys.exit("kick-trace.py: no kicks (SIGUSR1) in " + path)
    lat = []
    for ts, target, sender in kicks:
        r = rets.get(target, [])
        i = bisect.bisect_right(r, ts)
        if i < len(r): lat.append((r[i] - ts, ts, target, sender))
    d = [x[0] * 1e6 for x in lat]
    print(f"{len(kicks)} kicks of {len({k[1] for k in kicks})} threads; kick → ioctl return µs: p50 {pct(d, .5):.0f}, p90 {pct(d, .9):.0f}, "
          f"p99 {pct(d, .99):.0f}, max {max(d):.0f}; {sum(x >= 1000 for x in d)} of 1 ms or more")
    def where(pid, a, b):
        on, held = 0.0, collections.Counter()
        for (cpu, p), v in timeline.held(a, b).items():
            if p == pid: on += v
            else: held[(cpu, comm.get(p, "?") if p else "idle")] += v
        return on, held
    lat.sort(reverse=True)
    for l, ts, target, sender in lat[:8]:
        on, held = where(target, ts, ts + l)
        e = exits.get(target, [])
        n_exits = bisect.bisect_right(e, ts + l) - bisect.bisect_right(e, ts)
        top = ", ".join(f"cpu{c} {n} {v * 1e3:.2f}" for (c, n), v in held.most_common(4))
        print(f"  {l * 1e3:6.2f} ms  {comm.get(target)} kicked by {comm.get(sender)} at {ts:.6f}: on a CPU {on * 1e3:.2f} ms "
              f"({n_exits} KVM exits), meanwhile (ms): {top}")

if __name__ == "__main__":
    if len(sys.argv) < 2: sys.exit(__doc__)
    main(sys.argv[1])
