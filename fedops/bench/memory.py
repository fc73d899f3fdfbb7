"""Peak memory of the stack's containers, sampled from the engine's stats about
once a second in a background thread while a measurement runs."""
from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .machine import mem_available, parse_meminfo


def memory_used(stats: dict) -> int | None:
    """A container's memory as `docker stats` shows it: usage less the inactive page
    cache (cgroup v1 `total_inactive_file`, v2 `inactive_file`)."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    detail = mem.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        if key in detail and detail[key] < usage:
            return usage - detail[key]
    return usage


def idle_memory(ctr, samples: int = 3, interval: float = 1.0) -> int | None:
    """The median of a few `docker stats` readings (usage less inactive page cache)."""
    seen = []
    for i in range(samples):
        try:
            used = memory_used(ctr.stats(stream=False))
        except Exception:  # noqa: BLE001 - the container went away
            return None
        if used is not None:
            seen.append(used)
        if i + 1 < samples:
            time.sleep(interval)
    return int(statistics.median(seen)) if seen else None


# The engine answers a stats request with work of its own (dockerd and containerd, about
# 0.4 of a core at 50 requests a second): with many containers each is sampled less
# often, so the sampler does not take the CPU the SuperNodes it measures need.
STATS_PER_SECOND = 10


def sample_period(containers: int, interval: float, per_second: float = STATS_PER_SECOND) -> float:
    """Seconds between two samples of every container: `interval`, longer when more than
    `per_second * interval` containers are sampled."""
    return max(interval, containers / per_second)


def short_service(container_name: str, labels: dict[str, str]) -> str:
    return labels.get("com.docker.compose.service") or container_name


class MemorySampler:
    """Samples the memory of matching containers about once a second (less often when
    there are many: sample_period) in a background thread; `peaks()` is the maximum per
    container since the last `reset()`."""

    def __init__(self, client, project: str, services=("supernode-", "siteproxy-", "superlink", "nginx"),
                 extra_label: str | None = None, interval: float = 1.0):
        self.client, self.project, self.services = client, project, services
        self.extra_label, self.interval = extra_label, interval
        self._peaks: dict[str, dict] = {}
        self._min_available: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=16)
        # a container without a limit reports the host's memory as its limit
        self._host_memory = (parse_meminfo(Path("/proc/meminfo").read_text()).get("MemTotal", 2 ** 62)
                             if Path("/proc/meminfo").exists() else 2 ** 62)

    def _containers(self):
        found = {}
        for c in self.client.containers.list(filters={"label": f"com.docker.compose.project={self.project}"}):
            svc = c.labels.get("com.docker.compose.service", "")
            if any(svc == s or (s.endswith("-") and svc.startswith(s)) for s in self.services):
                found[c.id] = c
        if self.extra_label:
            for c in self.client.containers.list(filters={"label": self.extra_label}):
                found[c.id] = c
        return list(found.values())

    def _sample(self, ctr) -> None:
        try:
            stats = ctr.stats(stream=False, one_shot=True)
        except Exception:  # noqa: BLE001 - a container that went away
            return
        used = memory_used(stats)
        if used is None:
            return
        limit = (stats.get("memory_stats") or {}).get("limit")
        name = ctr.name
        with self._lock:
            entry = self._peaks.setdefault(name, {"service": short_service(name, ctr.labels),
                                                  "peak": 0, "limit": None})
            entry["peak"] = max(entry["peak"], used)
            if limit and limit < self._host_memory:
                entry["limit"] = limit

    def _loop(self) -> None:
        containers, listed = [], 0.0
        while not self._stop.is_set():
            t0 = time.monotonic()
            if t0 - listed > 5:
                try:
                    containers, listed = self._containers(), t0
                except Exception:  # noqa: BLE001 - the engine hiccuped; keep the old list
                    pass
            list(self._pool.map(self._sample, containers))
            avail = mem_available()
            if avail is not None:
                with self._lock:
                    self._min_available = avail if self._min_available is None else min(self._min_available, avail)
            period = sample_period(len(containers), self.interval)
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def reset(self) -> None:
        with self._lock:
            self._peaks, self._min_available = {}, None

    def peaks(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._peaks.items()}

    def min_available(self) -> int | None:
        with self._lock:
            return self._min_available

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=False)


def merge_peaks(into: dict[str, dict], new: dict[str, dict]) -> None:
    for name, info in new.items():
        old = into.get(name)
        if old is None or info["peak"] > old["peak"]:
            into[name] = info


# Run inside a container by its own python3: every process's command line, resident and
# anonymous memory (KiB), one tab-separated line each.
PROCESSES_PY = r"""
import os
for pid in sorted(os.listdir('/proc'), key=lambda p: (len(p), p)):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        cmd = open(f'/proc/{pid}/cmdline').read().replace('\0', ' ').strip()
        st = dict(l.split(':', 1) for l in open(f'/proc/{pid}/status') if ':' in l)
    except OSError:
        continue
    kib = lambda k: st.get(k, '0 kB').split()[0]
    print(cmd.replace('\t', ' '), kib('VmRSS'), kib('RssAnon'), sep='\t')
"""


def parse_processes(text: str) -> list[dict]:
    """PROCESSES_PY's output as [{command, rss, anon}] in bytes; the program's name
    (the script a python3 runs) first in `command`, its arguments dropped."""
    out = []
    for line in text.splitlines():
        parts = line.rsplit("\t", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        argv = parts[0].split()
        if not argv:
            continue
        program = argv[1] if Path(argv[0]).name.startswith("python") and len(argv) > 1 else argv[0]
        if program == "-c":
            continue
        out.append({"command": Path(program).name, "rss": int(parts[1]) * 1024, "anon": int(parts[2]) * 1024})
    return out


def container_processes(ctr) -> list[dict]:
    """What each process in a running container holds (parse_processes); [] when the
    container has no python3 or the exec fails."""
    try:
        code, output = ctr.exec_run(["python3", "-c", PROCESSES_PY], demux=False)
    except Exception:  # noqa: BLE001 - gone, or no exec possible
        return []
    return parse_processes(output.decode(errors="replace")) if code == 0 else []
