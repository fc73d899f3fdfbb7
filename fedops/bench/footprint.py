"""What the stack holds at rest, by the task list's phase (label fl.phase), and what
Prometheus costs: its memory, the series and samples it ingests, its TSDB on disk and
the growth per day that follows. Read from the running stack; nothing is changed."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .common import MIB
from .memory import idle_memory

# Prometheus' storage documentation: "on average, Prometheus uses only around 1-2 bytes
# per sample" once compacted into blocks.
BYTES_PER_SAMPLE = (1, 2)
MONITORING_PHASE = "5.2 monitoring"

QUERY_PY = ("import sys,urllib.parse,urllib.request;"
            "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/query?query='"
            "+urllib.parse.quote(sys.argv[1]),timeout=10).read().decode())")
PROMETHEUS_QUERIES = {
    "series": "prometheus_tsdb_head_series",
    "samples_per_s": "sum(rate(prometheus_tsdb_head_samples_appended_total[5m]))",
    "targets": "count(up)",
    "uptime_s": 'time() - process_start_time_seconds{job="prometheus"}',
    "interval_s": 'avg(prometheus_target_interval_length_seconds{quantile="0.5"})',
}


@dataclass
class Footprint:
    containers: list[dict] = field(default_factory=list)   # {name, service, phase, bytes}
    prometheus: dict[str, float] = field(default_factory=dict)
    tsdb_bytes: int | None = None
    note: str = ""

    def by_phase(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.containers:
            out[c["phase"]] = out.get(c["phase"], 0) + c["bytes"]
        return dict(sorted(out.items()))

    @property
    def total(self) -> int:
        return sum(c["bytes"] for c in self.containers)

    def share(self, phase: str) -> float | None:
        return self.by_phase().get(phase, 0) / self.total if self.total else None

    def per_day(self) -> tuple[float, float] | None:
        """Bytes per day the TSDB grows by once compacted (samples/s x 86,400 x 1-2 B)."""
        rate = self.prometheus.get("samples_per_s")
        return None if rate is None else tuple(rate * 86400 * b for b in BYTES_PER_SAMPLE)


def parse_query(text: str) -> float | None:
    """The first value of an instant query's answer, or None."""
    try:
        result = json.loads(text)["data"]["result"]
        return float(result[0]["value"][1]) if result else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def measure(client, project: str) -> Footprint:
    f = Footprint()
    running = client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
    for ctr in running:
        used = idle_memory(ctr)
        if used is not None:
            f.containers.append({"name": ctr.name, "service": ctr.labels.get("com.docker.compose.service", ctr.name),
                                 "phase": ctr.labels.get("fl.phase", "?"), "bytes": used})
    prom = next((c for c in running if c.labels.get("com.docker.compose.service") == "prometheus"), None)
    if prom is None:
        f.note = "Prometheus was not running"
        return f
    for key, promql in PROMETHEUS_QUERIES.items():
        code, out = prom.exec_run(["python3", "-c", QUERY_PY, promql])
        value = parse_query(out.decode(errors="replace")) if code == 0 else None
        if value is not None:
            f.prometheus[key] = value
    code, out = prom.exec_run(["du", "-sb", "/prometheus"])
    if code == 0 and out.split() and out.split()[0].isdigit():
        f.tsdb_bytes = int(out.split()[0])
    return f


def render(f: Footprint) -> list[str]:
    lines = ["", "## What the stack holds at rest, and what monitoring costs", "",
             "Memory of every running container of the stack between runs (median of three",
             "`docker stats` readings, usage less inactive page cache), summed by the task list's",
             "phase (label `fl.phase`).", ""]
    if not f.containers:
        return lines + [f"Not measured in this run{': ' + f.note if f.note else ''}."]
    lines += ["| phase | containers | memory (MiB) | share of the stack |", "|---|---|---|---|"]
    counts: dict[str, int] = {}
    for c in f.containers:
        counts[c["phase"]] = counts.get(c["phase"], 0) + 1
    for phase, used in f.by_phase().items():
        lines.append(f"| {phase} | {counts[phase]} | {used / MIB:.0f} | {f.share(phase):.0%} |")
    lines.append(f"| **all** | {len(f.containers)} | {f.total / MIB:.0f} | 100% |")
    mon = sorted((c for c in f.containers if c["phase"] == MONITORING_PHASE), key=lambda c: -c["bytes"])
    if mon:
        lines += ["", "Monitoring, service by service: "
                  + ", ".join(f"{c['service']} {c['bytes'] / MIB:.0f} MiB" for c in mon) + "."]
    p = f.prometheus
    if p:
        prom_mem = next((c["bytes"] for c in mon if c["service"] == "prometheus"), None)
        lines += ["", "Prometheus with the stack's targets:", "", "| | |", "|---|---|"]
        if "targets" in p:
            lines.append(f"| targets | {p['targets']:.0f} |")
        if "interval_s" in p:
            lines.append(f"| scrape interval (measured) | {p['interval_s']:.0f} s |")
        if "series" in p:
            lines.append(f"| series in the head block | {p['series']:.0f} |")
        if "samples_per_s" in p:
            lines.append(f"| samples ingested | {p['samples_per_s']:.0f} per second |")
        if prom_mem:
            per = f" ({prom_mem / p['series'] / 1024:.1f} KiB per series)" if p.get("series") else ""
            lines.append(f"| memory | {prom_mem / MIB:.0f} MiB{per} |")
        if f.tsdb_bytes is not None:
            age = f" after {p['uptime_s'] / 3600:.1f} h running" if "uptime_s" in p else ""
            lines.append(f"| TSDB on disk now | {f.tsdb_bytes / MIB:.1f} MiB{age} (write-ahead log and head "
                         "chunks until the first compaction, 2 h after start) |")
        day = f.per_day()
        if day:
            lines.append(f"| TSDB growth per day, compacted | {day[0] / MIB:.0f}-{day[1] / MIB:.0f} MiB "
                         f"(samples/s x 86,400 x {BYTES_PER_SAMPLE[0]}-{BYTES_PER_SAMPLE[1]} bytes per sample, "
                         "Prometheus' storage figure) |")
            lines.append(f"| at the default retention (15 days) | {day[0] * 15 / MIB:.0f}-{day[1] * 15 / MIB:.0f} MiB |")
    if f.note:
        lines += ["", f"Note: {f.note}."]
    return lines
