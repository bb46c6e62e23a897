"""What bench/sched-trace.py and bench/kick-trace.py share: the tracefs line format (record-tgid on), sched_switch's
fields, the per-CPU timeline of who ran when, and how long each thread held a CPU inside a window."""
import collections, re

LINE = re.compile(r'^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\(\s*(?P<tgid>[\d-]+)\)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+):\s+(?P<ev>\w+):\s+(?P<rest>.*)$')
SWITCH = re.compile(r'prev_comm=(.*) prev_pid=(\d+) prev_prio=(\d+) prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+) next_prio=(\d+)')

class Timeline:
    """Per CPU, the segments (start, end, pid) in which pid ran (0: idle), fed one sched_switch at a time."""
    def __init__(self):
        self.segs, self._running, self._since = collections.defaultdict(list), {}, {}

    def switch(self, ts, cpu, nxt):
        if cpu in self._running: self.segs[cpu].append((self._since[cpu], ts, self._running[cpu]))
        self._running[cpu], self._since[cpu] = nxt, ts

    def is_running(self, pid): return pid in self._running.values()

    def close(self):
        """Ends every CPU's last segment at the end of time (call once, after the last event)."""
        for cpu, pid in self._running.items(): self.segs[cpu].append((self._since[cpu], float("inf"), pid))
        self._running.clear()

    def held(self, a, b):
        """Seconds each (cpu, pid) ran within [a, b]."""
        occ = collections.Counter()
        for cpu, ss in self.segs.items():
            for s, t, p in ss:
                lo, hi = max(s, a), min(t, b)
                if hi > lo: occ[(cpu, p)] += hi - lo
        return occ
