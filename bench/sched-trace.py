#!/usr/bin/env python3
"""Reads a tracefs dump (sched_switch, sched_wakeup, record-tgid) of one `faultline migrate` and prints the destination
vCPUs' waits for a CPU: from a wake-up (or a preemption) to running again. For the longest ones, and for all waits of
1 ms or more together, it says which threads held the two CPUs meanwhile, labelled by process (dest = the process with
the urgent receiver fl-mig-rx-urg, src = the one with the demand server fl-mig-demand).
    sched-trace.py TRACE [REPORT.json]"""
import collections, json, re, sys
from tracefs import LINE, SWITCH, Timeline

WAKE = re.compile(r'comm=(.*) pid=(\d+) prio=(\d+) target_cpu=(\d+)')

def parse(path):
    events, tgid, comm = [], {}, {}
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m: continue
        pid, ts, cpu = int(m["pid"]), float(m["ts"]), int(m["cpu"])
        if m["tgid"].isdigit(): tgid[pid] = int(m["tgid"])
        comm.setdefault(pid, m["comm"])
        if m["ev"] == "sched_switch":
            s = SWITCH.match(m["rest"])
            if s:
                comm[int(s[2])] = s[1]; comm[int(s[6])] = s[5]
                events.append((ts, "switch", cpu, int(s[2]), s[4], int(s[6]), int(s[7])))
        elif m["ev"] in ("sched_wakeup", "sched_wakeup_new"):
            w = WAKE.match(m["rest"])
            if w:
                comm[int(w[2])] = w[1]
                events.append((ts, "wake", int(w[4]), int(w[2])))
    return events, tgid, comm

def main(trace, report=None):
    events, tgid, comm = parse(trace)
    if not events: sys.exit("sched-trace.py: no sched events in " + trace)
    role = {}
    for pid, name in comm.items():
        if name == "fl-mig-rx-urg" and pid in tgid: role[tgid[pid]] = "dest"
        if name == "fl-mig-demand" and pid in tgid: role[tgid[pid]] = "src"
    def label(pid):
        if pid == 0: return "idle"
        r = role.get(tgid.get(pid), "other")
        n = comm.get(pid, "?")
        return f"{r}:{'fl-vcpu' if n.startswith('fl-vcpu') else n}" if r != "other" else f"other:{n}"
    vcpus = {p for p, n in comm.items() if n.startswith("fl-vcpu") and role.get(tgid.get(p)) == "dest"}
    timeline = Timeline()
    waiting, waits = {}, []   # pid -> (since, cause); [(start, end, pid, cause, cpu)]
    for e in events:
        ts = e[0]
        if e[1] == "switch":
            _, _, cpu, prev, state, nxt, _ = e
            timeline.switch(ts, cpu, nxt)
            if prev in vcpus and state.startswith("R"): waiting[prev] = (ts, "preempted")
            if nxt in waiting:
                s, cause = waiting.pop(nxt); waits.append((s, ts, nxt, cause, cpu))
        else:
            _, _, cpu, pid = e
            if pid in vcpus and not timeline.is_running(pid) and pid not in waiting: waiting[pid] = (ts, "woken")
    if not vcpus: sys.exit("sched-trace.py: no destination vCPU threads found (is this a trace of `faultline migrate`?)")
    def held(a, b):
        occ = collections.Counter()
        for (cpu, p), v in timeline.held(a, b).items(): occ[(cpu, label(p))] += v
        return occ
    first_run = min((s for ss in timeline.segs.values() for s, t, p in ss if p in vcpus), default=0.0)
    r = json.load(open(report)) if report else {}
    if r.get("postcopy_ms"):   # the post-copy only: from the first destination vCPU run for postcopy_ms
        end = first_run + r["postcopy_ms"] / 1e3
        waits = [w for w in waits if w[0] < end]
        print(f"post-copy window: {first_run:.6f} + {r['postcopy_ms']:.1f} ms")
    waits.sort(key=lambda w: w[1] - w[0], reverse=True)
    if r:
        f = r.get("fault_latency_us", {})
        print(f"report: faults {f.get('count')}, p50 {f.get('p50')} p99 {f.get('p99')} max {f.get('max')} us; "
              f"wake max {r.get('wake_latency_us', {}).get('max')} us; post-copy {r.get('postcopy_ms')} ms; total {r.get('total_ms')} ms")
    d = [w[1] - w[0] for w in waits]
    print(f"destination vCPU threads {sorted(vcpus)}: {len(waits)} waits for a CPU, "
          f"{sum(x >= 1e-3 for x in d)} of 1 ms or more, {sum(d) * 1e3:.1f} ms in all, longest {max(d, default=0) * 1e3:.2f} ms")
    for s, t, pid, cause, cpu in waits[:8]:
        occ = held(s, t)
        top = ", ".join(f"cpu{c} {l} {v * 1e3:.2f}" for (c, l), v in occ.most_common(6))
        print(f"  {(t - s) * 1e3:6.2f} ms  {comm[pid]} {cause} at {s:.6f}, ran on cpu{cpu}; held by (ms): {top}")
    big = [w for w in waits if w[1] - w[0] >= 1e-3]
    total = collections.Counter()
    for s, t, *_ in big:
        for (c, l), v in held(s, t).items(): total[l] += v
    if big:
        print(f"who held the CPUs during the {len(big)} waits of 1 ms or more (ms, both CPUs):")
        for l, v in total.most_common(12): print(f"  {v * 1e3:8.2f}  {l}")

if __name__ == "__main__":
    if len(sys.argv) < 2: sys.exit(__doc__)
    main(*sys.argv[1:3])
