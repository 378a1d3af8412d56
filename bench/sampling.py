"""Process-tree sampling from /proc (no psutil in the venv): summed RSS and PSS, CPU seconds per
process and the 1-minute load average, while a measured child runs (bench/throughput.py)."""

from __future__ import annotations

import bisect
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")
_NAMES: dict[int, str] = {}


def _name(pid: int) -> str:
    """A short process label: Ray's process title (ray::SegmentStageActor...) or the executable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        first = argv[0].decode(errors="replace")
        if first.startswith("ray::"):
            return first.split(" ")[0][:60]
        if "default_worker.py" in b" ".join(argv).decode(errors="replace"):
            return "ray worker (starting or idle)"
        if "throughput.py" in b" ".join(argv).decode(errors="replace"):
            return "driver"
        return os.path.basename(first)[:40] or "?"
    except OSError:
        return "?"


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0.0


def sample_tree(pid: int, cpu: dict[int, float] | None = None) -> tuple[float, float, dict[int, float]]:
    """(RSS MB, PSS MB) summed over `pid` and all its descendants, and each one's RSS MB (pid -> MB);
    records each process's CPU seconds so far in `cpu` (pid -> s)."""
    pids = _tree(pid)
    rss_by_pid = {p: _kb(f"/proc/{p}/status", "VmRSS:") / 1024 for p in pids}
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    if cpu is not None:
        for p in pids:
            cpu[p] = max(cpu.get(p, 0.0), _cpu_s(p))
            label = _name(p)  # Ray retitles a worker when it becomes an actor: keep the most specific
            if p not in _NAMES or (label.startswith("ray::") and label != "ray::IDLE"):
                _NAMES[p] = label
    return sum(rss_by_pid.values()), pss / 1024, rss_by_pid


def load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


#: `Sampled.cores_busy`'s bins: cores kept busy between two samples, around 0, 1 and 2
_CORE_EDGES = (0.25, 0.75, 1.25, 1.75)
_CORE_BINS = ("<0.25", "0.25-0.75", "0.75-1.25", "1.25-1.75", ">=1.75")


@dataclass
class Sampled:
    """What `run_sampled` saw of one command's process tree."""

    returncode: int
    elapsed_s: float
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    processes_at_peak: int = 0
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds
    load: list[float] = field(default_factory=list)  # 1-min load averages seen
    rss_at_peak: dict[int, float] = field(default_factory=dict)  # pid -> RSS MB when the tree's RSS peaked
    #: (seconds since start, {pid: CPU seconds so far}) at every sample: where the cores sat idle
    timeline: list[tuple[float, dict[int, float]]] = field(default_factory=list)

    def rss_mb_at_peak_by_process(self) -> dict[str, float]:
        """Where the tree's peak RSS was: MB per process label at that moment, largest first."""
        return _by_label(self.rss_at_peak)

    def cpu_seconds_by_process(self) -> dict[str, float]:
        """CPU seconds summed per process label, largest first."""
        return _by_label(self.cpu)

    def cores_busy(self, label_contains: str = "") -> dict[str, float]:
        """Share of the run's time during which the processes whose label contains `label_contains`
        (all of the tree: "") kept 0, ~1 and ~2 cores busy, from the CPU they used between samples.
        Why: CPU seconds alone cannot tell a stage that waits for its input from one that computes."""
        bins = dict.fromkeys(_CORE_BINS, 0.0)
        total = 0.0
        for (t0, a), (t1, b) in zip(self.timeline, self.timeline[1:]):
            used = sum(cpu - a.get(pid, 0.0) for pid, cpu in b.items() if label_contains in _NAMES.get(pid, "?"))
            dt = t1 - t0
            total += dt
            bins[_CORE_BINS[bisect.bisect_right(_CORE_EDGES, used / dt)]] += dt
        return {k: round(v / total, 3) for k, v in bins.items()} if total else bins


def _by_label(per_pid: dict[int, float]) -> dict[str, float]:
    """Per-pid values summed per process label (`_NAMES`), largest first."""
    by_name: dict[str, float] = {}
    for pid, value in per_pid.items():
        label = _NAMES.get(pid, "?")
        by_name[label] = round(by_name.get(label, 0.0) + value, 1)
    return dict(sorted(by_name.items(), key=lambda kv: -kv[1]))


def run_sampled(cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path, interval_s: float = 0.5) -> Sampled:
    """Run `cmd` to its end (stdout and stderr to `log_path`), sampling its process tree's memory
    and CPU every `interval_s` and the load average every ~10 s."""
    peak_rss = peak_pss = 0.0
    cpu: dict[int, float] = {}
    at_peak: dict[int, float] = {}
    load = [load1()]
    timeline: list[tuple[float, dict[int, float]]] = []
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        while proc.poll() is None:
            rss, pss, rss_by_pid = sample_tree(proc.pid, cpu)
            if rss > peak_rss:
                peak_rss, at_peak = rss, rss_by_pid
            peak_pss = max(peak_pss, pss)
            timeline.append((time.perf_counter() - t0, dict(cpu)))
            time.sleep(interval_s)
            if len(cpu) and int(time.perf_counter() - t0) % 10 == 0:
                load.append(load1())
    load.append(load1())
    return Sampled(
        proc.returncode, time.perf_counter() - t0, peak_rss, peak_pss, len(at_peak), cpu, load, at_peak, timeline
    )
