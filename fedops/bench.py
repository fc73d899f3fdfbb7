"""`invoke bench`: the full stack against bare Flower processes, peak memory, capacity.

Three measurements, written to docs/benchmarks.md (regenerated whole on every run):

1. Wall time of the same app (apps/digits), rounds and SuperNode count two ways,
   alternately when repeated: the full stack the way users run it (`invoke fl.run`:
   `federation.submit` + `federation.follow`: containers, TLS, the edge, the sites'
   mTLS, SuperNode authentication) and bare flwr processes on the host (insecure, no
   containers). Both are timed from submission to the `finished:completed` status the
   SuperLink reports. Ratio = stack / bare; the target is at most TARGET_RATIO.
2. Peak memory of the stack's containers during its runs (docker stats, ~1 s samples).
3. Capacity: extra SuperNode containers (label fl.bench=1) join the existing sites'
   network namespaces with fresh registered keys; the total is stepped up and a
   one-round run waits for all of them (run config min-nodes), until a round fails
   or the cap. Afterwards the containers are removed and their keys unregistered.

The stack is shared: nothing here starts, stops or recreates a Compose service.
Pure helpers (command lines, parsing, the report) come first and are unit-tested.
"""
from __future__ import annotations

import json
import os
import platform
import re
import secrets as pysecrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import compose, config, federation, ownership, paths, secrets, stack
from .errors import FedopsError
from .services import SUPERNODE_UID

APP = "digits"
TARGET_RATIO = 1.15
REPORT = paths.ROOT / "docs" / "benchmarks.md"
BENCH_LABEL = "fl.bench"            # every container this module starts: fl.bench=1
BENCH_RUN_LABEL = "fl.bench.run"    # ... and the token of the bench run that started it
BARE_CONNECTION = "bench"
CAPACITY_TIMEOUT = 900              # seconds for one capacity round (start to finish)
ONLINE_TIMEOUT = 180                # seconds for new SuperNodes to come online
# Extra SuperNodes share a site's network namespace with its own SuperNode (9094 and
# 9098): theirs are numbered from these.
BENCH_RUNTIME_PORT = 19100
BENCH_HEALTH_PORT = 19300
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", flush=True)


# ================================================================ pure helpers
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(stack: float | None, bare: float | None) -> float | None:
    return stack / bare if stack and bare else None


def superlink_argv(port: int, database: str) -> list[str]:
    """Bare SuperLink: insecure, no node auth, no `uv sync`, on 127.0.0.1:PORT."""
    return ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
            "--database", database, "--host", "127.0.0.1", "--port", str(port)]


def supernode_argv(superlink_port: int, runtime_port: int, partition_id: int,
                   num_partitions: int) -> list[str]:
    """Bare SuperNode with its own ClientAppIo (Runtime API) port."""
    return ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{superlink_port}",
            "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
            "--host", "127.0.0.1", "--port", str(runtime_port)]


def connection_toml(name: str, port: int) -> str:
    """FLWR_HOME/config.toml for the bare SuperLink (insecure)."""
    return (f'[superlink]\ndefault = "{name}"\n\n'
            f'[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')


def flwr_run_argv(app_dir: Path, connection: str, run_config: str) -> list[str]:
    return ["flwr", "run", str(app_dir), connection, "--run-config", run_config, "--format", "json"]


def bare_env(base: dict[str, str], flwr_home: Path, bin_dir: Path) -> dict[str, str]:
    env = dict(base)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"})
    return env


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


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def parse_cpu_model(text: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
            return " ".join(value.split())
    return platform.processor() or platform.machine()


def capacity_steps(start: int, cap: int, step: int) -> list[int]:
    """start, start+step, ... up to cap (cap itself always the last step)."""
    if cap < start:
        return [start]
    steps = list(range(start, cap + 1, max(step, 1)))
    if steps[-1] != cap:
        steps.append(cap)
    return steps


def short_service(container_name: str, labels: dict[str, str]) -> str:
    return labels.get("com.docker.compose.service") or container_name


def fmt(value: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


@dataclass
class Timing:
    mode: str                 # "stack" or "bare"
    wall: float               # seconds, submission to finished status
    run_id: str
    status: str
    elapsed: float | None     # the SuperLink's own figure (running to finished)
    nodes: int | None = None  # SuperNodes online when it was submitted
    failures: int = 0         # replies the strategy counted as failures (all rounds)
    min_replies: int | None = None   # fewest results any aggregation received

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"

    @property
    def clean(self) -> bool:
        """Completed with every sampled SuperNode answering in every round."""
        return self.completed and self.failures == 0


@dataclass
class CapacityStep:
    supernodes: int
    wall: float | None
    status: str               # finished:completed, or what went wrong
    failures: int = 0
    peak_supernode: int | None = None     # bytes, the largest SuperNode container
    min_available: int | None = None      # bytes, host MemAvailable at its lowest

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


@dataclass
class Result:
    started: datetime
    rounds: int
    repeat: int
    supernodes: int
    machine: dict[str, str]
    timings: list[Timing] = field(default_factory=list)
    memory: dict[str, dict] = field(default_factory=dict)   # container -> {service, peak, limit}
    capacity: list[CapacityStep] = field(default_factory=list)
    capacity_note: str = ""
    max_supernodes: int = 0
    notes: list[str] = field(default_factory=list)

    def clean(self, mode: str) -> list[Timing]:
        return [t for t in self.timings if t.mode == mode and t.clean]

    def walls(self, mode: str) -> list[float]:
        """Wall times of the mode's clean runs (or of its completed ones, when none was
        clean)."""
        runs = self.clean(mode) or [t for t in self.timings if t.mode == mode and t.completed]
        return [t.wall for t in runs]

    @property
    def ratio(self) -> float | None:
        return ratio(median(self.walls("stack")), median(self.walls("bare")))


def capacity_summary(steps: list[CapacityStep], cap: int) -> str:
    done = [s.supernodes for s in steps if s.completed]
    failed = [s for s in steps if not s.completed]
    if not steps:
        return "not measured"
    if failed:
        first = failed[0]
        if done:
            return (f"a round completed with {max(done)} SuperNodes; with {first.supernodes} it did "
                    f"not ({first.status})")
        return f"no step completed: with {first.supernodes} SuperNodes: {first.status}"
    return (f"a round completed with {max(done)} SuperNodes, the cap of this probe "
            f"(--max-supernodes {cap}): the machine's limit was not reached")


def render_report(r: Result) -> str:
    """docs/benchmarks.md, whole."""
    m = r.machine
    stack_med, bare_med = median(r.walls("stack")), median(r.walls("bare"))
    q = r.ratio
    verdict = "not measured" if q is None else ("met" if q <= TARGET_RATIO else "NOT met")
    lines = [
        "<!-- Generated by `invoke bench` (fedops/bench.py); every run rewrites this whole",
        "     file. Do not edit by hand: change fedops/bench.py and run it again. -->",
        "# Benchmarks",
        "",
        f"Measured {r.started:%Y-%m-%d %H:%M} UTC by `invoke bench --rounds {r.rounds} "
        f"--repeat {r.repeat} --max-supernodes {r.max_supernodes}`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m.get('cpu', '?')}, {m.get('cores', '?')} cores |",
        f"| memory | {m.get('memory', '?')} |",
        f"| kernel | {m.get('kernel', '?')} |",
        f"| Docker Engine | {m.get('docker', '?')} |",
        f"| Flower | {m.get('flwr', '?')} |",
        f"| Python | {m.get('python', '?')} |",
        "",
        "## Full stack against bare Flower",
        "",
        f"The sample app `apps/{APP}`, {r.rounds} round(s), {r.supernodes} SuperNodes, two ways:",
        "",
        "- **stack**: the running platform, the way `invoke fl.run` submits and follows a run",
        "  (the admin's `flwr` CLI inside the SuperLink container): SuperNodes in containers,",
        "  each behind its site proxy (mTLS to the NGINX edge), TLS to the SuperLink, SuperNode",
        "  authentication.",
        "- **bare**: `flower-superlink --insecure` and one `flower-supernode --insecure` per",
        "  organisation as plain processes on the host (same flwr, same app, same node",
        "  config), `flwr run` against them.",
        "",
        "Wall time is from submitting the run to the SuperLink reporting",
        "`finished:completed` (`flwr log --stream`, then `flwr ls --run-id`), the same",
        "way for both; start-up of the bare processes is not counted (the stack is up",
        "already). Runs alternate stack, bare. The stack is shared: other users' runs may",
        "have overlapped. *SuperLink* is the run's duration as the SuperLink reports it.",
        "*Node failures* are replies the strategy counted as failed (a SuperNode that",
        "stopped answering mid-run, e.g. restarted): such a run waited for a time-out and",
        "is left out of the medians while the mode has clean runs; when a run was",
        "disturbed, more pairs follow (at most twice `--repeat` pairs).",
        "",
        "| # | mode | run id | SuperNodes online | status | node failures | wall (s) | SuperLink (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(r.timings, 1):
        lines.append(f"| {i} | {t.mode} | {t.run_id} | {t.nodes if t.nodes is not None else '-'} | "
                     f"{t.status} | {t.failures} | {t.wall:.1f} | {fmt(t.elapsed)} |")
    lines += [
        "",
        "| | stack (s) | bare (s) | ratio stack/bare | target | |",
        "|---|---|---|---|---|---|",
        f"| median | {fmt(stack_med)} | {fmt(bare_med)} | {fmt(q, '.2f', '-')}{'x' if q else ''} | "
        f"<= {TARGET_RATIO:.2f}x | **{verdict}** |",
        "",
        "## Peak memory per container",
        "",
        "Sampled about once a second (`docker stats`: usage less inactive page cache)",
        "during the stack's runs; a SuperNode's figure includes its `flwr-clientapp`",
        "subprocesses.",
        "",
        "| container | service | peak (MiB) | limit (MiB) |",
        "|---|---|---|---|",
    ]
    order = sorted(r.memory.items(), key=lambda kv: (not kv[1]["service"].startswith("supernode"), kv[0]))
    for name, info in order:
        limit = info.get("limit")
        lines.append(f"| {name} | {info['service']} | {info['peak'] / MIB:.0f} | "
                     f"{fmt(limit / MIB if limit else None, '.0f')} |")
    if not r.memory:
        lines.append("| (no samples) | | | |")
    lines += [
        "",
        "## Capacity",
        "",
        "How many SuperNodes this machine runs with a round still completing. Extra",
        "SuperNode containers (same image and limits as the sites', label `fl.bench=1`),",
        "spread over the existing sites' network namespaces so that they reach the edge",
        "through the site proxies, each with its own freshly generated and registered key,",
        "join the organisations' SuperNodes; at each step a one-round run waits for all of",
        "them (`--run-config \"num-server-rounds=1 min-nodes=N\"`). The probe stops at the",
        "first failure or at the cap; the extra containers are removed and their keys",
        "unregistered afterwards. Extra SuperNodes reuse the organisations' data",
        "partitions.",
        "",
    ]
    if r.capacity:
        lines += ["| SuperNodes | status | node failures | wall (s) | peak SuperNode (MiB) | "
                  "host memory available, lowest (GiB) |",
                  "|---|---|---|---|---|---|"]
        for s in r.capacity:
            lines.append(f"| {s.supernodes} | {s.status} | {s.failures} | {fmt(s.wall)} | "
                         f"{fmt(s.peak_supernode / MIB if s.peak_supernode else None, '.0f')} | "
                         f"{fmt(s.min_available / 1024 ** 3 if s.min_available else None, '.1f')} |")
        lines += ["", f"Result: {capacity_summary(r.capacity, r.max_supernodes)}."]
        if r.capacity_note:
            lines += ["", f"Note: {r.capacity_note}."]
    else:
        lines.append(f"Not measured in this run{': ' + r.capacity_note if r.capacity_note else ''}.")
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


# ================================================================ the machine
def machine_info() -> dict[str, str]:
    from importlib.metadata import version
    info = {"cores": str(os.cpu_count() or "?"), "kernel": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_version()} (bare processes)"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = parse_cpu_model(cpuinfo)
        mhz = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.M)
        if mhz:
            info["cpu"] += f" at {float(mhz.group(1)):.0f} MHz"
        if re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.M):
            info["cpu"] += " (virtual machine)"
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        total = parse_meminfo(Path("/proc/meminfo").read_text()).get("MemTotal", 0)
        info["memory"] = f"{total / 1024 ** 3:.1f} GiB"
    except OSError:
        info["memory"] = "?"
    info["docker"] = "?"
    info["flwr"] = f"{version('flwr')} (host virtualenv)"
    try:
        import docker
        client = docker.from_env()
        info["docker"] = client.version().get("Version", "?")
        ctr = client.containers.list(filters={"label": "com.docker.compose.service=superlink"})[0]
        out = ctr.exec_run(["python3", "-c", "import flwr, sys; print(flwr.__version__, sys.version.split()[0])"])
        if out.exit_code == 0:
            flwr_v, py_v = out.output.decode().split()
            info["flwr"] += f", {flwr_v} (images)"
            info["python"] += f", {py_v} (images)"
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def mem_available() -> int | None:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text()).get("MemAvailable")
    except OSError:
        return None


# ================================================================ memory sampling
class MemorySampler:
    """Samples the memory of matching containers about once a second in a background
    thread; `peaks()` is the maximum per container since the last `reset()`."""

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
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

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


# ================================================================ the full stack
def strip_level(text: str) -> str:
    return re.sub(r"^(INFO|WARNING|ERROR)\s*:\s*", "", text)


REPLIES_RE = re.compile(r"Received (\d+) results and (\d+) failures")


def count_replies(text: str, stats: dict) -> None:
    """Track `aggregate_*: Received N results and F failures` lines of a run's log."""
    found = REPLIES_RE.search(text)
    if found:
        results, failures = int(found.group(1)), int(found.group(2))
        stats["failures"] = stats.get("failures", 0) + failures
        stats["min_replies"] = min(stats.get("min_replies", results), results)


def show_progress(prefix: str, stats: dict | None = None):
    """A log-line callback that shows only the round lines, failures and the final
    accuracies, and counts the replies into `stats`."""
    stats = {} if stats is None else stats

    def on_line(line: str) -> None:
        text = federation.strip_ansi(line).strip()
        count_replies(text, stats)
        if REPLIES_RE.search(text) and not text.endswith(" 0 failures"):
            log(f"  {prefix} | {strip_level(text)}")
        if federation.ROUND_RE.search(text) or "Accuracy by round" in text or "ERROR" in text:
            log(f"  {prefix} | {strip_level(text)}")
    return on_line


def count_online(nodes, org_names) -> tuple[int, int]:
    """(the organisations' SuperNodes online, all SuperNodes online). Nodes are told
    apart by their registered name; when no name is known every online node counts."""
    online = [n for n in nodes if n.status == "online"]
    if not any(n.name for n in online):
        return len(online), len(online)
    return sum(n.name in org_names for n in online), len(online)


def online_organisations(nodes, org_names: list[str]) -> list[str]:
    """The organisations whose SuperNode is online, in federation order; all of them
    when the nodes' names are unknown and as many nodes as organisations are online."""
    online = [n for n in nodes if n.status == "online"]
    names = {n.name for n in online}
    if not any(names):
        return org_names[:len(online)]
    return [o for o in org_names if o in names]


def check_stack(fed, wait: float = 60) -> list[str]:
    """The stack must be up: the SuperLink running and at least two organisations'
    SuperNodes online (waits up to `wait` s for all). Returns the organisations online."""
    try:
        states = {s.service: s for s in stack.ps()}
    except FedopsError as exc:
        raise FedopsError(f"cannot see the stack: {exc.problem}", "start Docker, then `invoke up`") from None
    superlink = states.get("superlink")
    if not superlink or superlink.state != "running":
        raise FedopsError("the stack is not running (no SuperLink): the benchmark needs it",
                          "start it with `invoke up`, then run `invoke bench` again")
    orgs = [o.name for o in fed.organisations]
    deadline = time.time() + wait
    while True:
        online = online_organisations(federation.nodes(), orgs)
        if len(online) >= len(orgs) or time.time() > deadline:
            break
        time.sleep(3)
    if len(online) < 2:
        raise FedopsError(f"only {len(online)} of the organisations' {len(orgs)} SuperNodes are online; "
                          "the app needs two", "`invoke fl.status` and `invoke status` show which; "
                          "`invoke logs --service supernode-<org>` why")
    return online


def time_stack(rounds: int, overrides: dict | None = None, timeout: float = 1800, label: str = "stack",
               org_names=()) -> Timing:
    """One run on the full stack, exactly as `invoke fl.run` does it."""
    nodes = count_online(federation.nodes(), set(org_names))[1]   # before the clock starts
    t0 = time.monotonic()
    run_id = federation.submit(APP, rounds, overrides)
    log(f"  {label}: run {run_id} submitted ({nodes} SuperNodes online)")
    stats: dict = {}
    try:
        row = federation.follow(run_id, show_progress(label, stats), timeout=timeout)
    except BaseException:   # Ctrl-C or an error: leave no run waiting on the shared SuperLink
        with sigint_deferred():
            federation.stop(run_id)
        raise
    wall = time.monotonic() - t0
    if not row["status"].startswith("finished"):
        federation.stop(run_id)
    return Timing(label, wall, str(run_id), row["status"], _float(row.get("elapsed")), nodes,
                  stats.get("failures", 0), stats.get("min_replies"))


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ================================================================ bare processes
def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class BareFederation:
    """flower-superlink and N flower-supernode processes on the host, insecure, in a temp
    folder; each in its own process group, all killed on exit (also on errors, Ctrl-C)."""

    def __init__(self, partitions: list[int], num_partitions: int, app_dir: Path = paths.ROOT / "apps" / APP):
        """One SuperNode per partition id (the node config of the organisations' sites)."""
        self.partitions, self.num_partitions = list(partitions), num_partitions
        self.n, self.app_dir = len(self.partitions), app_dir
        self.bin_dir = Path(sys.executable).parent
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}
        self.port = 0

    def preflight(self) -> None:
        import importlib.util
        missing = [exe for exe in ("flower-superlink", "flower-supernode", "flwr")
                   if not (self.bin_dir / exe).exists()]
        missing += [mod for mod in ("sklearn", "numpy") if importlib.util.find_spec(mod) is None]
        if missing:
            raise FedopsError(f"the bare run needs {', '.join(missing)} in the task runner's virtualenv",
                              ".venv/bin/pip install -e '.[test]' (or delete .venv/.installed and run ./invoke)")

    def _spawn(self, argv: list[str], logname: str) -> subprocess.Popen:
        logf = open(Path(self.tmp.name) / logname, "wb")
        try:
            proc = subprocess.Popen(argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.tmp.name)
        finally:
            logf.close()
        self.procs.append(proc)
        return proc

    def log_tail(self, logname: str, lines: int = 15) -> str:
        try:
            text = (Path(self.tmp.name) / logname).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(federation.strip_ansi(text).splitlines()[-lines:])

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp.name)

    def __enter__(self):
        self.preflight()
        self.tmp = tempfile.TemporaryDirectory(prefix="fedops-bench-")
        home = Path(self.tmp.name) / "flwr-home"
        home.mkdir()
        ports = free_ports(1 + self.n)
        self.port = ports[0]
        (home / "config.toml").write_text(connection_toml(BARE_CONNECTION, self.port))
        self.env = bare_env(os.environ, home, self.bin_dir)
        try:
            self._start(ports[1:])
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, runtime_ports: list[int]) -> None:
        sl = self._spawn(superlink_argv(self.port, str(Path(self.tmp.name) / "state.db")), "superlink.log")
        deadline = time.time() + 90
        while True:   # SuperNodes that find no SuperLink exit: wait for it first
            if sl.poll() is not None:
                raise FedopsError(f"the bare flower-superlink exited ({sl.returncode}):\n{self.log_tail('superlink.log')}",
                                  f"is port {self.port} free? run `{shlex.join(superlink_argv(self.port, ':memory:'))}` by hand")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise FedopsError("the bare flower-superlink did not answer /health within 90 s:\n"
                                  + self.log_tail("superlink.log"), "see the log lines above")
            time.sleep(0.5)
        for i, (rport, pid) in enumerate(zip(runtime_ports, self.partitions)):
            self._spawn(supernode_argv(self.port, rport, pid, self.num_partitions), f"supernode-{i}.log")
        deadline = time.time() + 90
        while True:
            online = self.online()
            if online >= self.n:
                return
            dead = [i for i, p in enumerate(self.procs[1:]) if p.poll() is not None]
            if dead:
                raise FedopsError(f"bare flower-supernode {dead[0]} exited:\n{self.log_tail(f'supernode-{dead[0]}.log')}",
                                  "see the log lines above")
            if time.time() > deadline:
                raise FedopsError(f"only {online} of {self.n} bare SuperNodes came online within 90 s",
                                  "see the SuperNodes' logs")
            time.sleep(1)

    def online(self) -> int:
        proc = self.flwr("supernode", "list", BARE_CONNECTION, "--format", "json")
        try:
            nodes = federation.parse_json(proc.stdout).get("nodes", [])
        except (FedopsError, json.JSONDecodeError):
            return 0
        return sum(n.get("status") == "online" for n in nodes)

    def status(self, run_id: str) -> dict:
        proc = self.flwr("ls", "--run-id", str(run_id), BARE_CONNECTION, "--format", "json")
        runs = federation.parse_json(proc.stdout).get("runs", [])
        if not runs:
            raise FedopsError(f"bare run {run_id} is unknown: {proc.stderr.strip()[-300:]}",
                              "see the bare SuperLink's log")
        return runs[0]

    def time_run(self, rounds: int, timeout: float = 1800) -> Timing:
        t0 = time.monotonic()
        proc = self.flwr(*flwr_run_argv(self.app_dir, BARE_CONNECTION, federation.run_config(rounds))[1:],
                         timeout=300)
        data = federation.parse_json(proc.stdout) if "{" in proc.stdout else {}
        run_id = str(data.get("run-id") or "")
        if proc.returncode != 0 or not data.get("success") or not run_id:
            raise FedopsError(f"flwr run on the bare SuperLink failed: {(proc.stderr or proc.stdout).strip()[-600:]}",
                              "see the bare SuperLink's log")
        log(f"  bare: run {run_id} submitted")
        stats: dict = {}
        row = federation.follow(run_id, show_progress("bare", stats), timeout=timeout,
                                log_argv=[str(self.bin_dir / "flwr"), "log", run_id, BARE_CONNECTION, "--stream"],
                                status=self.status, env=self.env)
        return Timing("bare", time.monotonic() - t0, run_id, row["status"], _float(row.get("elapsed")), self.n,
                      stats.get("failures", 0), stats.get("min_replies"))

    def close(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left after 10 s."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            _signal_group(proc, signal.SIGKILL)   # also the group's children (SuperExec, apps)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        if self.tmp:
            self.tmp.cleanup()
            self.tmp = None

    def __exit__(self, *exc):
        with sigint_deferred():
            self.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)   # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def sigint_deferred():
    """Clean-up must not be cut short by a second Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    old = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if received:
        raise KeyboardInterrupt


# ================================================================ capacity
def bench_container_spec(index: int, token: str, image: str, site_container_id: str, key_path: Path,
                         ca_path: Path, partition_id: int, num_partitions: int) -> dict:
    """docker SDK `containers.run` arguments of one extra SuperNode: the sites' image,
    user and limits (compose.organisations.yml.j2), in a site proxy's network namespace."""
    return dict(
        image=image,
        name=f"flfed-bench-{token}-supernode-{index}",
        detach=True,
        user=f"{SUPERNODE_UID}:{SUPERNODE_UID}",
        init=True,
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode=f"container:{site_container_id}",
        environment={
            "SUPERLINK_ADDRESS": "127.0.0.1:9443",
            "PARTITION_ID": str(partition_id),
            "NUM_PARTITIONS": str(num_partitions),
            "SUPERNODE_RUNTIME_PORT": str(BENCH_RUNTIME_PORT + index),
            "SUPERNODE_HEALTH_ADDRESS": f"127.0.0.1:{BENCH_HEALTH_PORT + index}",
        },
        volumes={str(key_path): {"bind": "/etc/fl/site/supernode_key", "mode": "ro"},
                 str(ca_path): {"bind": "/etc/fl/tls/ca.crt", "mode": "ro"}},
        tmpfs={"/tmp": f"uid={SUPERNODE_UID},gid={SUPERNODE_UID},mode=0700,size=512m"},
        mem_limit="1g",
        labels={BENCH_LABEL: "1", BENCH_RUN_LABEL: token},
        # like the sites' `restart: unless-stopped`, but bounded: an unregistered or
        # unreachable SuperNode exits, and a SuperLink restart must not end the probe
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
    )


class BenchNodes:
    """Extra SuperNode containers for the capacity probe. Everything it creates (keys,
    registrations, containers) is undone by close(), also on errors and Ctrl-C."""

    def __init__(self, client, project: str, fed):
        self.client, self.project, self.fed = client, project, fed
        self.token = pysecrets.token_hex(3)
        self.tmp = tempfile.TemporaryDirectory(prefix="fedops-bench-keys-")
        os.chmod(self.tmp.name, 0o700)
        self.node_ids: list[str] = []
        self.containers: list = []
        self.sites = self._sites()
        self.image = self._image()

    def _sites(self) -> list[tuple[str, str]]:
        """(organisation, its running site proxy's container id)."""
        out = []
        for org in self.fed.organisations:
            found = self.client.containers.list(filters={
                "label": [f"com.docker.compose.project={self.project}",
                          f"com.docker.compose.service=siteproxy-{org.name}"]})
            if found:
                out.append((org.name, found[0].id))
        if not out:
            raise FedopsError("no running site proxy (siteproxy-<org>) to attach extra SuperNodes to",
                              "`invoke status`; start the stack with `invoke up`")
        return out

    def _image(self) -> str:
        found = self.client.containers.list(filters={
            "label": [f"com.docker.compose.project={self.project}",
                      f"com.docker.compose.service=supernode-{self.sites[0][0]}"]})
        if not found:
            raise FedopsError(f"supernode-{self.sites[0][0]} is not running", "`invoke up` starts it")
        return found[0].attrs["Config"]["Image"]

    @property
    def label_filter(self) -> str:
        return f"{BENCH_RUN_LABEL}={self.token}"

    def add(self, count: int) -> None:
        """Register and start `count` more SuperNodes (round-robin over the sites)."""
        num = len(self.fed.organisations)
        for _ in range(count):
            index = len(self.containers)
            org, site_id = self.sites[index % len(self.sites)]
            name = f"bench-{self.token}-{index}"
            private, public = secrets.new_supernode_key(name)
            key_path = Path(self.tmp.name) / f"supernode-{index}.key"
            key_path.write_bytes(private)
            ownership.give(key_path, SUPERNODE_UID, 0o400)
            state, node_id = federation.register_key(public, name)
            if state != "registered" or not node_id:
                raise FedopsError(f"registering the bench SuperNode {name} gave {state}",
                                  "see `invoke logs --service superlink`")
            self.node_ids.append(node_id)
            spec = bench_container_spec(index, self.token, self.image, site_id, key_path,
                                        paths.DEPLOY_DIR / f"org-{org}" / "ca.crt", index % num, num)
            self.containers.append(self.client.containers.run(**spec))

    def wait_online(self, timeout: float = ONLINE_TIMEOUT) -> bool:
        deadline = time.time() + timeout
        while True:
            online = {str(n.node_id) for n in federation.nodes() if n.status == "online"}
            missing = [n for n in self.node_ids if n not in online]
            if not missing:
                return True
            stopped = self.stopped()
            if stopped or time.time() > deadline:
                for ctr in stopped:
                    tail = federation.strip_ansi(ctr.logs(tail=4).decode(errors="replace")).strip().replace("\n", " | ")
                    log(f"  bench SuperNode {ctr.name} stopped: {tail[-400:]}")
                if not stopped:
                    log(f"  {len(missing)} bench SuperNode(s) not online after {timeout:.0f} s")
                return False
            time.sleep(3)

    def stopped(self) -> list:
        """Our containers that have stopped for good (their restart policy gave up)."""
        out = []
        for ctr in self.containers:
            try:
                ctr.reload()
            except Exception:  # noqa: BLE001 - removed behind our back
                continue
            if ctr.status in ("exited", "dead"):
                out.append(ctr)
        return out

    def restart_stopped(self) -> int:
        stopped = self.stopped()
        for ctr in stopped:
            ctr.start()
        return len(stopped)

    def close(self) -> list[str]:
        """Remove our containers, unregister our keys, delete the keys; returns problems."""
        problems = []
        for ctr in self.client.containers.list(all=True, filters={"label": self.label_filter}):
            try:
                ctr.remove(force=True)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"removing {ctr.name}: {exc}")
        for node_id in self.node_ids:
            try:
                federation.unregister(node_id)
            except FedopsError as exc:
                problems.append(f"unregistering node {node_id}: {exc.problem}")
        self.containers, self.node_ids = [], []
        self.tmp.cleanup()
        return problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with sigint_deferred():
            n = len(self.containers)
            problems = self.close()
        if n:
            log(f"capacity: removed {n} bench SuperNode container(s) and unregistered their keys")
        for p in problems:
            log(f"  clean-up problem: {p} (remove by hand: docker rm -f $(docker ps -aq --filter label={self.label_filter}))")


def probe_capacity(client, project: str, fed, base: int, cap: int, sampler: MemorySampler,
                   results: list[CapacityStep]) -> None:
    """Step the SuperNode count up from `base` (the organisations' online) in steps of
    the organisations' count; appends a CapacityStep per step (kept on errors). A step
    that fails is tried once more (the stack is shared: a restarted SuperLink or site is
    no capacity limit)."""
    orgs = [o.name for o in fed.organisations]
    with BenchNodes(client, project, fed) as extra:
        for target in capacity_steps(base, cap, len(orgs)):
            need = target - base - len(extra.containers)
            log(f"capacity: {target} SuperNodes ({base} organisations' + {target - base} bench)")
            if need > 0:
                extra.add(need)
            for attempt in (1, 2):
                sampler.reset()
                step = _capacity_step(extra, orgs, sampler)
                if step.completed or attempt == 2:
                    break
                log(f"  {step.status}: trying this step once more")
                extra.restart_stopped()
            if attempt == 2:
                step.status += " (2nd try)"
            results.append(step)
            if not step.completed:
                break


def _capacity_step(extra: BenchNodes, orgs: list[str], sampler: MemorySampler) -> CapacityStep:
    """Wait for the bench SuperNodes, then one round that waits for every SuperNode
    online (the organisations' that are online now plus ours)."""
    t0 = time.monotonic()
    if extra.node_ids:
        if not extra.wait_online():
            total = len(online_organisations(federation.nodes(), orgs)) + len(extra.node_ids)
            return CapacityStep(total, None, "SuperNodes did not come online", 0,
                                _peak_supernode(sampler), sampler.min_available())
        log(f"  all {len(extra.node_ids)} bench SuperNodes online after {time.monotonic() - t0:.0f} s")
    total = len(online_organisations(federation.nodes(), orgs)) + len(extra.node_ids)
    timing = time_stack(1, {"min-nodes": total}, timeout=CAPACITY_TIMEOUT, label=f"n={total}",
                        org_names=orgs)
    status = timing.status if timing.status.startswith("finished") else f"timed out ({timing.status})"
    log(f"  n={total}: {status} in {timing.wall:.1f} s ({timing.failures} node failures)")
    return CapacityStep(total, timing.wall, status, timing.failures, _peak_supernode(sampler),
                        sampler.min_available())


def _peak_supernode(sampler: MemorySampler) -> int | None:
    peaks = [v["peak"] for v in sampler.peaks().values()
             if v["service"].startswith("supernode-") or v["service"].startswith("flfed-bench-")]
    return max(peaks) if peaks else None


# ================================================================ the whole benchmark
def run(rounds: int = 3, repeat: int = 2, max_supernodes: int = 12, skip_capacity: bool = False,
        report: Path = REPORT) -> Result:
    import docker

    if rounds < 1 or repeat < 1:
        raise FedopsError("--rounds and --repeat must be at least 1", "e.g. invoke bench --rounds 3 --repeat 2")
    fed = config.load()
    orgs = [o.name for o in fed.organisations]
    log(f"checking the stack ({len(orgs)} organisations' SuperNodes expected online)")
    online = check_stack(fed)
    n = len(online)
    partitions = [fed.organisation(o).partition_id for o in online]
    BareFederation(partitions, len(orgs)).preflight()
    client = docker.from_env()
    project = compose.project_name()
    result = Result(datetime.now(timezone.utc), rounds, repeat, n, machine_info(), max_supernodes=max_supernodes)
    if n < len(orgs):
        result.notes.append(f"only {n} of the {len(orgs)} organisations' SuperNodes were online on the "
                            f"stack ({', '.join(online)}), so both modes ran with {n} SuperNodes "
                            f"(partitions {', '.join(map(str, partitions))} of {len(orgs)})")
        log(f"  only {n} of {len(orgs)} organisations' SuperNodes online: both modes use {n}")

    log(f"starting bare Flower: 1 SuperLink, {n} SuperNodes (insecure, host processes)")
    with BareFederation(partitions, len(orgs)) as bare, MemorySampler(client, project) as sampler:
        log(f"  bare SuperLink on 127.0.0.1:{bare.port}, {n} SuperNodes online")
        for i in range(1, 2 * repeat + 1):
            if i > repeat and all(len(result.clean(m)) >= repeat for m in ("stack", "bare")):
                break
            what = f"pair {i}/{repeat}" if i <= repeat else f"extra pair {i - repeat} (a run was disturbed)"
            log(f"{what}: stack, {rounds} round(s)")
            sampler.reset()
            t = time_stack(rounds, org_names=orgs)
            merge_peaks(result.memory, sampler.peaks())
            result.timings.append(t)
            log(f"  stack: {t.status} in {t.wall:.1f} s ({t.failures} node failures)")
            log(f"{what}: bare, {rounds} round(s)")
            b = bare.time_run(rounds)
            result.timings.append(b)
            log(f"  bare: {b.status} in {b.wall:.1f} s ({b.failures} node failures)")
    failed = [t for t in result.timings if not t.completed]
    if failed:
        result.notes.append("runs that did not complete are left out of the medians: "
                            + ", ".join(f"{t.mode} {t.run_id} ({t.status})" for t in failed))
    for mode in ("stack", "bare"):
        if not result.clean(mode) and any(t.mode == mode and t.completed for t in result.timings):
            result.notes.append(f"no {mode} run was free of node failures: its median includes disturbed runs")
    q = result.ratio
    log(f"ratio stack/bare (medians): {fmt(q, '.2f')}x (target <= {TARGET_RATIO}x)")

    if skip_capacity:
        result.capacity_note = "skipped (--skip-capacity)"
    else:
        with MemorySampler(client, project, services=("supernode-",),
                           extra_label=f"{BENCH_LABEL}=1") as sampler:
            try:
                probe_capacity(client, project, fed, n, max_supernodes, sampler, result.capacity)
            except FedopsError as exc:
                result.capacity_note = f"the probe failed: {exc.problem}"
                log(f"capacity probe failed: {exc}")
        if result.capacity:
            log(f"capacity: {capacity_summary(result.capacity, max_supernodes)}")

    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(result))
    log(f"wrote {report.relative_to(paths.ROOT) if report.is_relative_to(paths.ROOT) else report}")
    return result
