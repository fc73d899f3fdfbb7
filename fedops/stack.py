"""The stack's Compose state: the merged model, what runs, its health, its ports, its
logs, and waiting until services are ready."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import compose, engine
from .errors import FedopsError

# A service down or restarting this long counts as a crash loop. Not shorter: a SuperNode
# recreated together with its site proxy could not deactivate on the way out (its way to
# the SuperLink went first), so the new one is refused ("Failed to activate SuperNode")
# until the SuperLink marks the old session offline (about a minute), and its restart
# policy tries again with a growing back-off.
CRASH_LOOP_AFTER = 100
READY_TIMEOUT = 600          # seconds a service may take to become ready
POLL = 0.5                   # seconds between readiness checks of one service

RELOAD_COMMAND = ("python3", "/usr/local/bin/entrypoint.py", "reload")


def reloads_certificates(service: str) -> bool:
    """The NGINX-based services (the edge, the site proxies) load new certificates with a
    graceful reload: open connections finish, SuperNodes stay in their proxy's namespace."""
    return service == "nginx" or service.startswith("siteproxy-")


def model(profiles=(), within: dict | None = None) -> dict:
    """The merged Compose model (`docker compose config`), as Compose resolves it;
    cut from `within`, a model read with these profiles or more, when given."""
    if within is not None:
        return for_profiles(within, profiles)
    out = compose.call("config", "--format", "json", profiles=profiles)
    if out.returncode != 0:
        raise FedopsError(f"docker compose rejected the configuration:\n{out.stderr.strip()}",
                          "fix the file it names; `invoke config` validates everything")
    return json.loads(out.stdout)


def for_profiles(the_model: dict, profiles) -> dict:
    """The part of a model read with more profiles that `model(profiles)` would give:
    the services of those profiles (and those in none), the volumes they mount and
    the secrets they or their builds use.
    One `docker compose config` then serves every step of `invoke up` (it takes a
    quarter of a second). The profiles must not change the files read: gpu, which adds
    an overlay, must be in both sets or in neither."""
    active = set(profiles)
    services = {n: s for n, s in the_model.get("services", {}).items()
                if not s.get("profiles") or active & set(s["profiles"])}
    mounted = {v.get("source") for s in services.values() for v in s.get("volumes") or [] if v.get("type") == "volume"}
    volumes = {n: v for n, v in (the_model.get("volumes") or {}).items() if n in mounted}
    used = {x.get("source") for s in services.values()
            for x in [*(s.get("secrets") or []), *((s.get("build") or {}).get("secrets") or [])]}
    secrets = {n: v for n, v in (the_model.get("secrets") or {}).items() if n in used}
    return {**the_model, "services": services, "volumes": volumes, "secrets": secrets}


def defined_services(profiles=()) -> list[str]:
    return sorted(model(profiles).get("services", {}))


@dataclass
class ServiceState:
    service: str
    state: str
    health: str
    ports: str


def ps(profiles=()) -> list[ServiceState]:
    out = compose.call("ps", "--all", "--format", "json", profiles=profiles)
    if out.returncode != 0:
        raise FedopsError(f"docker compose ps failed: {out.stderr.strip()}", "check `docker info`")
    text = out.stdout.strip()
    if not text:
        return []
    # Compose prints one JSON object per line (2.21+) or a list (older).
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    states = []
    for r in rows:
        ports = ", ".join(sorted({f"{p['URL']}:{p['PublishedPort']}->{p['TargetPort']}"
                                  for p in r.get("Publishers") or [] if p.get("PublishedPort")}))
        states.append(ServiceState(r["Service"], r["State"], r.get("Health") or "-", ports))
    return sorted(states, key=lambda s: s.service)


def running() -> set[str]:
    return {s.service for s in ps() if s.state == "running"}


def published_ports(the_model: dict | None = None) -> list[tuple[str, int, str]]:
    """(address, port, the setting that chooses it) for every published port."""
    the_model = the_model if the_model is not None else model()
    settings = compose.settings()
    by_value = {v: k for k, v in settings.items() if k.endswith("_PORT")}
    result = []
    for svc in the_model.get("services", {}).values():
        for p in svc.get("ports") or []:
            published = int(str(p.get("published", 0)).split("-")[0] or 0)
            if published:
                result.append((p.get("host_ip") or "0.0.0.0", published,
                               by_value.get(str(published), "the port mapping")))
    return result


def logs_tail(names: list[str], lines: int = 15) -> str:
    return compose.call("logs", "--no-color", "--tail", str(lines), *names).stdout


# ---------------------------------------------------------------- readiness
@dataclass
class Readiness:
    """Whether one service is ready: Docker says healthy, or its own health probe
    (the healthcheck command of the model, run now in its container) passes. Checked
    on demand, so readiness is seen within POLL seconds rather than at Docker's next
    healthcheck interval; the steady-state healthchecks stay as they are."""
    service: str
    state: str = "missing"       # missing, created, running, restarting, exited, dead
    health: str = "-"            # Docker's: starting, healthy, unhealthy, - (none)
    ready: bool = False
    container_id: str = ""
    restarts: int = 0            # Docker's restart count of the container


def check(service: str, container, test: list[str] | None) -> Readiness:
    if container is None:
        return Readiness(service)
    try:
        container.reload()
    except Exception:
        return Readiness(service)
    health = (container.attrs.get("State", {}).get("Health") or {}).get("Status", "-")
    r = Readiness(service, container.status, health, container_id=container.id,
                  restarts=int(container.attrs.get("RestartCount") or 0))
    if container.status != "running":
        return r
    argv = engine.healthcheck_command(test)
    r.ready = health == "healthy" or argv is None or engine.Probe(container.id, argv)()
    return r


def check_all(services: list[str], tests: dict[str, list[str] | None]) -> dict[str, Readiness]:
    """Readiness of several services at once (probes in parallel)."""
    if not services:
        return {}
    containers = engine.project_containers(compose.project_name(), sparse=True)   # check() reloads each
    with ThreadPoolExecutor(max_workers=min(8, len(services))) as pool:
        futures = {s: pool.submit(check, s, containers.get(s), tests.get(s)) for s in services}
        return {s: f.result() for s, f in futures.items()}


def healthcheck_tests(the_model: dict) -> dict[str, list[str] | None]:
    return {name: (svc.get("healthcheck") or {}).get("test") for name, svc in the_model.get("services", {}).items()}


class CrashWatch:
    """Services that went down (exited, restarting, or restarted by their restart
    policy since the watch began) and have not been ready for CRASH_LOOP_AFTER seconds
    since. A container that exits at once and is restarted looks "running" most of
    the time: its restart count tells."""

    def __init__(self, window: float = CRASH_LOOP_AFTER):
        self.window = window
        self.since: dict[str, float] = {}
        self.first_restarts: dict[str, tuple[str, int]] = {}

    def update(self, states: dict[str, Readiness], now: float) -> list[str]:
        for name, r in states.items():
            if r.ready:
                self.since.pop(name, None)
                self.first_restarts[name] = (r.container_id, r.restarts)
                continue
            seen = self.first_restarts.setdefault(name, (r.container_id, r.restarts))
            restarted = seen[0] == r.container_id and r.restarts > seen[1]
            if r.state in ("restarting", "exited", "dead") or restarted:
                self.since.setdefault(name, now)
        return sorted(n for n, t in self.since.items() if now - t > self.window)


def not_ready_error(names: list[str], why: str) -> FedopsError:
    return FedopsError(f"{', '.join(names)} {why}; last log lines:\n{logs_tail(names)}",
                       f"see `invoke logs --service {names[0]}`; fix, then run `invoke up` again")


def wait_healthy(names: list[str], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every named service is ready (see Readiness); print progress; fail
    early on a crash loop, with the logs' tail and a next step."""
    tests = healthcheck_tests(model())
    start = time.time()
    watch = CrashWatch()
    last = ""
    while True:
        states = check_all(names, tests)
        pending = [n for n in names if not states[n].ready]
        if not pending:
            return
        now = time.time()
        crashing = watch.update(states, now)
        line = ", ".join(f"{n}: {states[n].health if states[n].health != '-' else states[n].state}" for n in pending)
        if line != last:
            print(f"    waiting ({int(now - start)}s) {line}", flush=True)
            last = line
        if crashing:
            raise not_ready_error(crashing, "keeps crashing")
        if now - start > timeout:
            raise not_ready_error(pending, f"is not healthy after {timeout:.0f}s")
        time.sleep(POLL)
