"""One run of the sample app on the full stack, timed exactly as `invoke fl.run`
runs it, with its progress and the SuperNodes' replies counted from its log."""
from __future__ import annotations

import re
import time

from .. import federation, runlog, stack
from ..errors import FedopsError
from .common import sigint_deferred, APP, _float, log
from .report import Timing
from .rounds import round_times


def strip_level(text: str) -> str:
    return re.sub(r"^(INFO|WARNING|ERROR)\s*:\s*", "", text)


REPLIES_RE = runlog.REPLIES_RE
ROUND_HEADER_RE = runlog.ROUND_HEADER_RE


def count_replies(text: str, stats: dict) -> None:
    """Track `aggregate_*: Received N results and F failures` lines of a run's log."""
    found = REPLIES_RE.search(text)
    if found:
        results, failures = int(found.group(2)), int(found.group(3))
        stats["failures"] = stats.get("failures", 0) + failures
        stats["min_replies"] = min(stats.get("min_replies", results), results)


def show_progress(prefix: str, stats: dict | None = None):
    """A log-line callback that shows only the round lines, failures and the final
    accuracies, and counts the replies into `stats`."""
    stats = {} if stats is None else stats

    def on_line(line: str) -> None:
        text = runlog.strip_ansi(line).strip()
        count_replies(text, stats)
        if REPLIES_RE.search(text) and not text.endswith(" 0 failures"):
            log(f"  {prefix} | {strip_level(text)}")
        if runlog.ROUND_RE.search(text) or "Accuracy by round" in text or "ERROR" in text:
            log(f"  {prefix} | {strip_level(text)}")
        if ROUND_HEADER_RE.search(text):              # a round begins: when its line arrived
            stats.setdefault("round_marks", []).append(time.time())
        elif "Accuracy by round" in text:
            stats["end_mark"] = time.time()
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
    t0, started = time.monotonic(), time.time()
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
                  stats.get("failures", 0), stats.get("min_replies"), started,
                  round_times(stats.get("round_marks", []), stats.get("end_mark")))
