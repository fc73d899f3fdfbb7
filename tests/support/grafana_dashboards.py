"""The Grafana dashboards' queries (services/grafana/dashboards), read the way Grafana
reads them: shared by the provisioning's unit test and by tests/stack/test_dashboards.py,
which asks the live Prometheus for every one.

How template variables are substituted outside Grafana (services/grafana/README.md):
- a dashboard variable (`$organisation`, `${job}`) becomes its "All" value. Every
  variable of these dashboards has includeAll with allValue ".*" and is used only as
  `label=~"$name"` (the unit test holds them to that), so the query asks for every value,
  as a user who opens the dashboard sees it;
- Grafana's `$__rate_interval` and `$__interval` become four scrape intervals (what
  Grafana computes for `$__rate_interval` at a step no longer than the scrape interval),
  `$__range` one hour.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from fedops import paths

GRAFANA_DIR = paths.SERVICES_DIR / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "fl-prometheus"}
BUILTINS = ("__rate_interval", "__interval", "__range")
# $name, ${name} and ${name:format}, as Grafana's template syntax has them
VARIABLE_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True)
class Query:
    dashboard: str      # the file's stem, e.g. federation-overview
    panel_id: int
    title: str
    ref_id: str
    expr: str
    instant: bool       # an instant query (tables, bar gauges), else a range query

    def __str__(self) -> str:
        return f"{self.dashboard} #{self.panel_id} {self.title!r} ({self.ref_id})"

    @property
    def id(self) -> str:
        return f"{self.dashboard}-{self.panel_id}{self.ref_id}"


def dashboards(folder: Path = DASHBOARDS_DIR) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those folded into rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(name: str, dashboard: dict) -> list[Query]:
    return [Query(name, p["id"], p.get("title", ""), t.get("refId", ""), t.get("expr", ""), bool(t.get("instant")))
            for p in panels(dashboard) for t in p.get("targets", [])]


def variables_in(expr: str) -> set[str]:
    return {a or b for a, b in VARIABLE_RE.findall(expr)}


def defined_variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


LABEL_VALUES_RE = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def label_values(variable: dict) -> tuple[str, str]:
    """(series selector, label) of a variable's `label_values(SELECTOR, LABEL)` query:
    what Prometheus' /api/v1/label/LABEL/values?match[]=SELECTOR answers for Grafana."""
    found = LABEL_VALUES_RE.match(variable["query"]["query"])
    if not found:
        raise ValueError(f"variable {variable['name']}: not a label_values(selector, label) query")
    return found.group(1).strip(), found.group(2)


def seconds(duration: str) -> int:
    """A Prometheus duration such as 30s, 1m or 1m30s, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return max(1, int(sum(int(n) * units[u] for n, u in parts)))


def substitute(expr: str, dashboard: dict, scrape_interval: str) -> str:
    """The query Prometheus gets from this dashboard with every variable at "All"."""
    defined = defined_variables(dashboard)
    interval = f"{4 * seconds(scrape_interval)}s"
    builtin = {"__rate_interval": interval, "__interval": interval, "__range": "1h"}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in builtin:
            return builtin[name]
        if name in defined:
            return defined[name]["allValue"]
        raise KeyError(f"${name} is neither a variable of the dashboard nor one of Grafana's {BUILTINS}")
    return VARIABLE_RE.sub(value, expr)
