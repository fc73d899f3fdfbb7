"""Where a round's time goes, measured from the SuperNodes' own logs.

Each message a SuperNode handles leaves four timestamped lines in its container's log
(`docker logs --timestamps`): flwr's `Receiving: ... message` when the pull returns
it, `Received successfully` once it is stored, the ClientApp process's first line
`Start \\`flwr-clientapp\\` process` (after its imports), and `Sent successfully` when
the reply is on the SuperLink. Between them lie the steps of a phase (train or
evaluate), per SuperNode:

- pull: fetching the message and its objects (Fleet API, through the site proxy and
  the edge);
- start: the SuperExec's next poll for tasks and the ClientApp's process (forked by
  the SuperNode's warm launcher; with flwr's own SuperExec a new `flwr-clientapp`
  process and its imports of flwr);
- clientapp: installing the FAB, the app's imports, the model work, the reply handed
  back and pushed;
- wait: from the reply sent to the SuperNode's next message: flwr's SuperNode pulls
  again at once, finds nothing while the ServerApp waits for the other SuperNodes,
  then sleeps a fixed 3 s before the next pull.

The static half (who sets each step, what was tried) is round_breakdown.md beside
this module."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime

from .common import log

MARKERS = {                                  # log text -> event
    "Receiving:": "pulled",
    "Received successfully": "received",
    "Start `flwr-clientapp` process": "clientapp",
    "Sent successfully": "sent",
}
STEPS = ("pull", "start", "clientapp", "wait")


@dataclass
class Handled:
    """One message handled by one SuperNode: when each event happened."""
    node: str
    times: dict[str, datetime] = field(default_factory=dict)

    def complete(self) -> bool:
        return all(e in self.times for e in MARKERS.values())


@dataclass
class RoundProfile:
    run_id: str
    steps: dict[str, list[float]]          # step -> seconds, one value per message (wait: per gap)
    rounds: list[float]                    # seconds per round, from the run's log
    messages: int

    def median(self, step: str) -> float | None:
        values = self.steps.get(step) or []
        return statistics.median(values) if values else None


def timestamp(line: str) -> datetime | None:
    """The RFC 3339 timestamp Docker puts before each line (nanoseconds cut to micro)."""
    stamp = line.split(" ", 1)[0]
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    whole, _, frac = stamp[:-1].partition(".")
    try:
        return datetime.fromisoformat(f"{whole}.{(frac or '0')[:6].ljust(6, '0')}+00:00")
    except ValueError:
        return None


def parse(node: str, text: str) -> list[Handled]:
    """The messages a SuperNode handled, in order, from its timestamped log. A message
    starts at its `Receiving:` line; the events after it belong to it."""
    handled: list[Handled] = []
    for line in text.splitlines():
        event = next((e for marker, e in MARKERS.items() if marker in line), None)
        when = timestamp(line) if event else None
        if when is None:
            continue
        if event == "pulled":
            handled.append(Handled(node))
        if handled and event not in handled[-1].times:
            handled[-1].times[event] = when
    return handled


def steps(handled: list[Handled]) -> dict[str, list[float]]:
    """Seconds of each step over the messages of one SuperNode (in order)."""
    out: dict[str, list[float]] = {s: [] for s in STEPS}
    previous: Handled | None = None
    for h in handled:
        if not h.complete():
            previous = None
            continue
        t = h.times
        # a ClientApp forked at once (the warm launcher) may start before the SuperNode
        # logs the receipt, which it first confirms with the SuperLink: the start step is
        # then 0 and the overlap stays with the pull, so that the steps still add up
        started = max(t["clientapp"], t["received"])
        out["pull"].append((t["received"] - t["pulled"]).total_seconds())
        out["start"].append((started - t["received"]).total_seconds())
        out["clientapp"].append((t["sent"] - started).total_seconds())
        if previous is not None:
            out["wait"].append((t["pulled"] - previous.times["sent"]).total_seconds())
        previous = h
    return out


def profile(run_id: str, logs: dict[str, str], rounds: list[float]) -> RoundProfile:
    """The steps over every SuperNode's log ({node: timestamped log of the run})."""
    merged: dict[str, list[float]] = {s: [] for s in STEPS}
    messages = 0
    for node, text in sorted(logs.items()):
        handled = parse(node, text)
        messages += sum(h.complete() for h in handled)
        for step, values in steps(handled).items():
            merged[step] += values
    return RoundProfile(run_id, merged, rounds, messages)


def measure(client, project: str, run_id: str, since: float, until: float,
            rounds: list[float]) -> RoundProfile | None:
    """Profile a run from the logs of the organisations' SuperNode containers between
    `since` and `until` (epoch seconds)."""
    found = client.containers.list(filters={"label": [f"com.docker.compose.project={project}"]})
    logs = {}
    for ctr in found:
        service = ctr.labels.get("com.docker.compose.service", "")
        if service.startswith("supernode-"):
            raw = ctr.logs(timestamps=True, since=int(since), until=int(until) + 1)
            logs[service.removeprefix("supernode-")] = raw.decode(errors="replace")
    result = profile(run_id, logs, rounds)
    if not result.messages:
        log("round profile: no complete message in the SuperNodes' logs")
        return None
    return result


def round_times(marks: list[float], end: float | None) -> list[float]:
    """Seconds per round from when each `[ROUND k/N]` line and the final line arrived."""
    bounds = marks + ([end] if end is not None and marks and end >= marks[-1] else [])
    return [b - a for a, b in zip(bounds, bounds[1:])]


def render(p: RoundProfile | None) -> list[str]:
    lines = ["", "## A round, measured", ""]
    if p is None:
        return lines + ["Not measured in this run (no complete stack run, or its SuperNodes' logs were empty)."]
    per_round = ", ".join(f"{r:.1f}" for r in p.rounds) or "-"
    what = {
        "pull": "pull: the message and its objects, through the site proxy and the edge",
        "start": "start: the launcher's next task poll, the ClientApp's process forked",
        "clientapp": "ClientApp: FAB install, the app's imports, model work, reply pushed",
        "wait": "wait: reply sent to the next message (empty pull, then flwr's fixed 3 s sleep)",
    }
    lines += [f"From the SuperNodes' own logs during stack run {p.run_id} ({p.messages} messages; "
              f"rounds of {per_round} s from the run's log). Per SuperNode and message:", "",
              "| step | median (s) | min (s) | max (s) |", "|---|---|---|---|"]
    for step in STEPS:
        values = p.steps.get(step) or []
        if values:
            lines.append(f"| {what[step]} | {statistics.median(values):.2f} | {min(values):.2f} | "
                         f"{max(values):.2f} |")
    total = sum(v for s in STEPS if (v := p.median(s)) is not None)
    lines += ["", f"One phase per SuperNode, the medians summed: {total:.1f} s; a round is two phases "
              "(train, evaluate) and waits for the slowest SuperNode of each."]
    return lines
