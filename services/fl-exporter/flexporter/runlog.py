"""What a Flower run's log says about its rounds: the one parser of run logs.

The FL exporter (flexporter.exporter) feeds it the Control API's log stream; `invoke
fl.run` and `invoke bench` load this file by path (fedops/runlog.py) and feed it the
lines of `flwr log --stream`. Pure standard library, so both can.

It reads what flwr 1.42's strategies (flwr.serverapp.strategy.Strategy.start) log for
every round, whatever the app:

    [ROUND 2/3]                                             the round starts
    aggregate_train: Received 3 results and 0 failures
    └──> Aggregated MetricRecord: {'train_loss': 0.46, ...}   -> phase "train"
    aggregate_evaluate: Received 3 results and 0 failures
    └──> Aggregated MetricRecord: {'eval_loss': 0.49, ...}    -> phase "evaluate"
    Global evaluation
    └──> MetricRecord: {'accuracy': 0.89, 'loss': 0.49}         -> phase "server_evaluate"

and `Initial global evaluation results: {...}` (round 0, phase "server_evaluate").
Only numeric values are kept; a record that is not a Python literal is skipped.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field

# The three kinds of aggregated metrics a round has (the strategy's names for them:
# ClientApp-side train and evaluate, ServerApp-side evaluate).
PHASES = ("train", "evaluate", "server_evaluate")

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# A round's header "[ROUND 2/3]", or an app's own "[ROUND 2] ..." line.
ROUND_RE = re.compile(r"\[ROUND (\d+)(?:/(\d+))?\]")
_HEADER_RE = re.compile(r"\[ROUND (\d+)/(\d+)\]\s*$")
REPLIES_RE = re.compile(r"aggregate_(train|evaluate): Received (\d+) results and (\d+) failures")
_RECORD_RE = re.compile(r"└──> (Aggregated )?MetricRecord: (\{.*\})\s*$")
_INITIAL_RE = re.compile(r"Initial global evaluation results: (\{.*\})\s*$")
_GLOBAL_EVALUATION_RE = re.compile(r":\s+Global evaluation\s*$")


def strip_ansi(text: str) -> str:
    """Without the terminal colours flwr puts into its logs."""
    return ANSI_RE.sub("", text)


def record(text: str) -> dict[str, float]:
    """The finite numeric values of a logged MetricRecord (a dict's repr); {} if it is
    not one. Read from the syntax tree, never evaluated: `nan` or a list is skipped,
    not a reason to lose the record's other values."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return {}
    if not isinstance(tree, ast.Dict):
        return {}
    out = {}
    for key, value in zip(tree.keys, tree.values):
        sign = 1.0
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
            sign = -1.0 if isinstance(value.op, ast.USub) else 1.0
            value = value.operand
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)
                and isinstance(value, ast.Constant) and isinstance(value.value, (int, float))
                and not isinstance(value.value, bool)):
            continue
        number = sign * float(value.value)
        if math.isfinite(number):
            out[key.value] = number
    return out


@dataclass
class Replies:
    results: int
    failures: int


@dataclass
class Event:
    """One line that said something about the rounds."""
    round: int
    kind: str                                   # "round", "replies" or "metrics"
    phase: str | None = None                    # train, evaluate, server_evaluate
    metrics: dict[str, float] = field(default_factory=dict)
    replies: Replies | None = None


@dataclass
class RunLog:
    """A run's rounds as its log tells them, fed in pieces as they arrive."""
    round: int = 0                              # the round under way (0: not started)
    rounds: int | None = None                   # the planned number of rounds
    # round -> phase -> metric name -> value (the last logged)
    metrics: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    replies: dict[int, dict[str, Replies]] = field(default_factory=dict)
    _partial: str = ""
    _next: str | None = None                    # the phase of the next MetricRecord line

    def feed(self, chunk: str) -> list[Event]:
        """A piece of the log (any length, lines may be split across pieces)."""
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        return [e for e in map(self.line, lines) if e is not None]

    def close(self) -> list[Event]:
        """The end of the log: the last line, if it had no newline."""
        rest, self._partial = self._partial, ""
        event = self.line(rest) if rest else None
        return [event] if event else []

    def line(self, raw: str) -> Event | None:
        """One complete line of the log; an Event when it said something about rounds."""
        text = strip_ansi(raw).rstrip("\r\n")
        header = _HEADER_RE.search(text)
        if header:
            self.round, self.rounds = int(header.group(1)), int(header.group(2))
            self._next = None
            return Event(self.round, "round")
        replies = REPLIES_RE.search(text)
        if replies:
            phase = replies.group(1)
            counts = Replies(int(replies.group(2)), int(replies.group(3)))
            self.replies.setdefault(self.round, {})[phase] = counts
            self._next = phase
            return Event(self.round, "replies", phase, replies=counts)
        if _GLOBAL_EVALUATION_RE.search(text):
            self._next = "server_evaluate"
            return None
        initial = _INITIAL_RE.search(text)
        if initial:
            return self._metrics(0, "server_evaluate", initial.group(1))
        found = _RECORD_RE.search(text)
        if found and self._next:
            # "Aggregated MetricRecord" follows aggregate_*; a plain one follows the
            # global evaluation. Anything else is not the strategy's.
            phase, self._next = self._next, None
            if (phase == "server_evaluate") != (found.group(1) is None):
                return None
            return self._metrics(self.round, phase, found.group(2))
        return None

    def _metrics(self, rnd: int, phase: str, text: str) -> Event | None:
        values = record(text)
        if not values:
            return None
        self.metrics.setdefault(rnd, {}).setdefault(phase, {}).update(values)
        return Event(rnd, "metrics", phase, metrics=values)
