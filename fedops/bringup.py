"""`invoke up`: every service starts as soon as what it needs is ready.

The dependency graph is the Compose model's `depends_on` (written once, in the compose
files; Compose itself honours it when run by hand). A service is started (one
`docker compose up -d --no-deps` per batch) when every service it depends on is ready
in this run, so independent chains (the database and Keycloak; the SuperLink and the
sites) come up side by side. Readiness is seen when it happens: each waiting service's
own healthcheck command is run in its container every POLL seconds (fedops/stack.py),
instead of waiting for Docker's next healthcheck interval. Hooks run when a service
becomes ready, before anything that depends on it starts (the SuperNodes' keys are
registered once the SuperLink is ready). The output names each service with the task
list's phase it belongs to (label fl.phase).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from . import compose, config, engine, preflight, stack
from .errors import FedopsError
from .ui import detail, step

Hook = Callable[[object, config.Federation], None]


@dataclass(frozen=True)
class Node:
    service: str
    phase: str
    needs: tuple[str, ...]


def graph(the_model: dict) -> dict[str, Node]:
    """The services and what each needs, from the merged Compose model."""
    services = the_model.get("services", {})
    nodes = {}
    for name, svc in services.items():
        needs = set(svc.get("depends_on") or {})
        network = str(svc.get("network_mode") or "")
        if network.startswith("service:"):
            needs.add(network.split(":", 1)[1])
        nodes[name] = Node(name, (svc.get("labels") or {}).get("fl.phase", "-"), tuple(sorted(needs)))
    for node in nodes.values():
        unknown = [n for n in node.needs if n not in nodes]
        if unknown:
            raise FedopsError(f"{node.service} depends on {', '.join(unknown)}, which is not defined",
                              "fix depends_on in the compose files (`invoke config` checks them)")
    order(nodes)   # refuses cycles
    return nodes


def order(nodes: dict[str, Node]) -> list[list[str]]:
    """Topological levels: each level needs only earlier levels."""
    done: set[str] = set()
    levels = []
    remaining = dict(nodes)
    while remaining:
        level = sorted(n for n, node in remaining.items() if set(node.needs) <= done)
        if not level:
            raise FedopsError(f"the services {', '.join(sorted(remaining))} depend on each other in a cycle",
                              "fix depends_on in the compose files")
        levels.append(level)
        done |= set(level)
        for n in level:
            del remaining[n]
    return levels


def chains(nodes: dict[str, Node]) -> dict[str, list[str]]:
    """For each service, its longest chain of dependencies (itself last)."""
    memo: dict[str, list[str]] = {}

    def longest(name: str) -> list[str]:
        if name not in memo:
            best = max((longest(n) for n in nodes[name].needs), key=len, default=[])
            memo[name] = best + [name]
        return memo[name]
    return {n: longest(n) for n in nodes}


@dataclass
class Progress:
    """What happened to each service in this run: when it started and became ready."""
    t0: float = field(default_factory=time.time)
    started: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)      # running already, unchanged

    def elapsed(self) -> float:
        return time.time() - self.t0


def start_batch(c, names: list[str], nodes: dict[str, Node], restart: list[str], profiles,
                progress: Progress, first: bool, initial: dict[str, stack.Readiness],
                tests: dict[str, list[str] | None]) -> tuple[set[str], dict[str, stack.Readiness]]:
    """Reload or restart services with new certificates, then `up -d --no-deps` the
    batch. `initial`: the services' containers when this bring-up began (only its own
    batches change them). Returns the services whose container changed (created or
    recreated) and every service's readiness right after."""
    running = {n: initial[n] for n in names if n in initial and initial[n].state == "running"}
    before = {n: r.container_id for n, r in running.items()}
    stale = [n for n in names if n in restart and n in running]
    reload_ = [n for n in stale if stack.reloads_certificates(n)]
    restart_ = [n for n in stale if n not in reload_]
    for name in reload_:
        detail(f"new certificates: reloading {name} (no restart)")
        quiet(c, "exec", "-T", name, *stack.RELOAD_COMMAND, profiles=profiles)
    # A SuperNode cut off while its site's certificate was refused (revoked, expired)
    # may sit in its restart back-off: restart it now rather than in a minute.
    stuck = [n.replace("siteproxy-", "supernode-", 1) for n in reload_ if n.startswith("siteproxy-")]
    stuck = [n for n in stuck if n in nodes]
    if stuck:
        health = stack.check_all(stuck, {})
        stuck = [n for n in stuck if health[n].health != "healthy"]
    if stuck:
        detail(f"restarting {', '.join(stuck)} (cut off before the new certificate)")
        quiet(c, "restart", *stuck, profiles=profiles)
    if restart_:
        detail(f"new certificates: restarting {', '.join(restart_)}")
        quiet(c, "restart", *restart_, profiles=profiles)
    args = ["up", "-d", "--no-deps", "--no-build"] + (["--remove-orphans"] if first else [])
    quiet(c, *args, *names, profiles=profiles)
    after = stack.check_all(names, tests)
    changed = {n for n in names if after[n].container_id != before.get(n) or n in restart_ or n in stuck}
    progress.kept |= {n for n in names if n not in changed}
    return changed, after


def quiet(c, *args: str, profiles=()) -> None:
    """`docker compose ARGS` without its progress lines; its output when it fails."""
    result = compose.run(c, *args, profiles=profiles, echo=False, hide=True, warn=True)
    if not result.ok:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise FedopsError(f"`docker compose {' '.join(args[:2])} ...` failed:\n{tail}",
                          "see `invoke logs`; fix, then run `invoke up` again")


def up(c, fed: config.Federation, profiles=(), build: bool = True, hooks: dict[str, Hook] | None = None,
       restart: list[str] = (), timeout: float = stack.READY_TIMEOUT, model: dict | None = None) -> Progress:
    """Bring every service up by dependencies, waiting for readiness. `restart`: services
    with new certificates (reloaded or restarted when already running). `hooks`: run
    when the named service becomes ready, before its dependents start. `model`: the
    Compose model read with these profiles or more (stack.for_profiles), if at hand.
    The caller has checked the engine (preflight.docker_engine)."""
    the_model = stack.model(profiles, within=model)
    preflight.ports(stack.published_ports(the_model), engine.held_ports(compose.project_name()))
    nodes = graph(the_model)
    if build:
        from . import images
        images.build(c, profiles=profiles, model=model)
    drift = engine.network_drift(the_model.get("networks", {}))
    if drift:
        step(f"network settings changed ({', '.join(drift)}): recreating the networks; "
             "the services restart, their data is kept")
        quiet(c, "down", "--remove-orphans", profiles=profiles)
    hooks = dict(hooks or {})
    tests = stack.healthcheck_tests(the_model)
    step(f"bring-up: {len(nodes)} services, each as soon as what it needs is ready")
    progress = Progress()
    upped: set[str] = set()       # `up` done (or in flight) in this run
    started: set[str] = set()     # `up` done: waiting for readiness
    ready: set[str] = set()
    watch = stack.CrashWatch()
    last_wait = 0.0
    # Each batch's `docker compose up` runs in the background, so a slow one
    # (recreating a service) does not hold back an independent chain.
    initial = stack.check_all(list(nodes), {})     # the containers as they are now
    with ThreadPoolExecutor(max_workers=4) as pool:
        inflight: dict = {}
        while len(ready) < len(nodes):
            startable = sorted(n for n in nodes if n not in upped and set(nodes[n].needs) <= ready)
            if startable:
                for n in startable:
                    progress.started[n] = progress.elapsed()
                inflight[pool.submit(start_batch, c, startable, nodes, list(restart), profiles, progress,
                                     not upped, initial, tests)] = startable
                upped |= set(startable)
            states: dict[str, stack.Readiness] = {}
            for future in [f for f in inflight if f.done()]:
                batch = inflight.pop(future)
                changed, after = future.result()     # raises the batch's FedopsError
                states |= after                      # checked just now: no second look this turn
                started |= set(batch)
                for n in batch:
                    detail(f"[{nodes[n].phase}] {n}: {'started' if n in changed else 'running, unchanged'}")
            waiting = sorted(started - ready)
            states |= stack.check_all([n for n in waiting if n not in states], tests)
            for n in waiting:
                if states[n].ready:
                    if n in hooks:
                        hooks.pop(n)(c, fed)
                    ready.add(n)
                    progress.ready[n] = progress.elapsed()
                    if n not in progress.kept:
                        detail(f"[{nodes[n].phase}] {n}: ready after {progress.ready[n] - progress.started[n]:.1f}s "
                               f"(at {progress.ready[n]:.1f}s)")
            pending = [n for n in waiting if n not in ready]
            crashing = watch.update({n: states[n] for n in pending}, time.time())
            if crashing:
                raise stack.not_ready_error(crashing, "keeps crashing")
            late = [n for n in pending if progress.elapsed() - progress.started[n] > timeout]
            if late:
                raise stack.not_ready_error(late, f"is not ready after {timeout:.0f}s")
            if pending and progress.elapsed() - last_wait >= 10:
                last_wait = progress.elapsed()
                detail(f"waiting ({progress.elapsed():.0f}s): " + ", ".join(
                    f"{n} ({states[n].health if states[n].health != '-' else states[n].state})" for n in pending))
            if (pending or inflight) and not startable:
                # until the next readiness check is due, or a batch's `up` returns
                if inflight:
                    wait(list(inflight), timeout=stack.POLL if pending else None, return_when=FIRST_COMPLETED)
                else:
                    time.sleep(stack.POLL)
    summary(nodes, progress)
    return progress


def summary(nodes: dict[str, Node], progress: Progress) -> None:
    """Per phase of the task list: when its last service was ready."""
    by_phase: dict[str, list[str]] = {}
    for n, node in nodes.items():
        by_phase.setdefault(node.phase, []).append(n)
    for phase in sorted(by_phase):
        names = sorted(by_phase[phase])
        at = max(progress.ready[n] for n in names)
        kept = all(n in progress.kept for n in names)
        detail(f"phase {phase}: {', '.join(names)}: {'unchanged' if kept else f'ready at {at:.1f}s'}")
    print(f"    all {len(nodes)} services ready in {progress.elapsed():.1f}s", flush=True)
