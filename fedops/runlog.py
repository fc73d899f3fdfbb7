"""The run-log parser, loaded from the FL exporter's package by file path:
services/fl-exporter/flexporter/runlog.py is the one place that knows what a Flower
run's log says about its rounds; `invoke fl.run`, `invoke bench` and the exporter all
read logs with it. (It is pure standard library, and fedops does not import the
exporter's package, which needs flwr and prometheus-client.)"""
from __future__ import annotations

import importlib.util
import sys

from . import paths

SOURCE = paths.SERVICES_DIR / "fl-exporter" / "flexporter" / "runlog.py"
_NAME = "fedops._runlog"


def _load():
    spec = importlib.util.spec_from_file_location(_NAME, SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module         # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_module = sys.modules.get(_NAME) or _load()
RunLog = _module.RunLog
PHASES = _module.PHASES
ROUND_RE = _module.ROUND_RE
ROUND_HEADER_RE = _module._HEADER_RE      # `[ROUND k/N]` alone on its line: a round begins
REPLIES_RE = _module.REPLIES_RE
strip_ansi = _module.strip_ansi


def table(log, phase: str | None = None) -> list[str]:
    """`invoke fl.run`'s summary: one row per round (from 1) of one phase's metrics:
    the ServerApp-side evaluation when the run has one, else the ClientApp-side
    evaluation, else training. [] when the log gave no metrics."""
    rounds = sorted(r for r in log.metrics if r > 0)
    if phase is None:
        present = {p for r in rounds for p in log.metrics[r]}
        phase = next((p for p in ("server_evaluate", "evaluate", "train") if p in present), None)
    if phase is None:
        return []
    keys = sorted({k for r in rounds for k in log.metrics[r].get(phase, {})})
    lines = ["round  " + "  ".join(f"{k:>10}" for k in keys) + f"    ({phase.replace('_', ' ')})"]
    for r in rounds:
        values = log.metrics[r].get(phase, {})
        lines.append(f"{r:5}  " + "  ".join(f"{values.get(k, float('nan')):10.4f}" for k in keys))
    return lines
