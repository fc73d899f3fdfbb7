"""Bringing the stack up and down, in the task list's phase order."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass

from . import compose, config, paths, pki, preflight, render, secrets, services
from .errors import FedopsError


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


# ---------------------------------------------------------------- preparation
def issue_all(fed: config.Federation, ca: pki.PKI) -> dict[str, str]:
    """Every certificate the configuration needs (idempotent)."""
    results = {}
    for svc in services.SERVICES:
        results[svc.name] = ca.ensure(svc.name, svc.sans(fed), kind="server")
    for org in fed.organisations:
        # serverClient: the org certificate is the site's client certificate at the edge
        # and its site proxy's server certificate on the site's loopback.
        results[org.cert_name] = ca.ensure(org.cert_name, services.org_sans(fed, org),
                                           kind="serverClient", org=org.display_name)
    return results


def deploy_all(fed: config.Federation, ca: pki.PKI) -> list[str]:
    """Deploy every certificate; returns the names whose files changed."""
    paths.DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.DEPLOY_DIR, 0o700)
    revoked = ca.revoked_names()
    targets = [(s.name, s.uid) for s in services.SERVICES] + \
              [(o.cert_name, services.SITEPROXY_UID) for o in fed.organisations]
    changed = []
    for name, uid in targets:
        if name not in revoked:   # a revoked site keeps its (refused) old certificate
            if pki.deploy(ca, name, paths.DEPLOY_DIR / name, uid):
                changed.append(name)
    pki.refresh_crl(ca)
    return changed


def give_supernode_keys(fed: config.Federation) -> None:
    from . import ownership
    folder = paths.SECRETS_DIR / secrets.SUPERNODE_KEYS
    for org in fed.organisations:
        ownership.give(folder / f"{org.name}.key", services.SUPERNODE_UID)


def prepare(fed: config.Federation | None = None) -> tuple[config.Federation, list[str]]:
    """Config, secrets, CA, certificates and rendered files: everything before images.
    Returns the configuration and the services whose certificates changed."""
    fed = fed or config.load()
    step("secrets (./secrets)")
    created = [k for k, v in secrets.generate(fed).items() if v != "kept"]
    print(f"    {'created: ' + ', '.join(created) if created else 'all present'}")
    give_supernode_keys(fed)
    ca = pki.PKI(fed, runner=pki.default_runner(compose_argv=compose.argv(["tools"])))
    step("certificate authority (./ca/pki)")
    print("    created a new CA" if ca.init() else "    CA present, kept")
    if ca.ensure_crl_fresh():
        print("    CRL renewed")
    results = issue_all(fed, ca)
    changed = {k: v for k, v in results.items() if v != "kept"}
    print(f"    certificates: {len(results)} ({', '.join(f'{k} {v}' for k, v in changed.items()) or 'all kept'})")
    deployed = deploy_all(fed, ca)
    changed_files = render.render_all(fed)
    if changed_files:
        print(f"    rendered: {', '.join(changed_files)}")
    restart = []
    for name in deployed:
        if name.startswith("org-"):
            restart.append(f"siteproxy-{name[4:]}")
        else:
            restart.append(name)
    return fed, restart


# ---------------------------------------------------------------- compose state
def defined_services(profiles=()) -> list[str]:
    out = subprocess.run([*compose.argv(profiles), "config", "--services"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise FedopsError(f"docker compose rejected the configuration:\n{out.stderr.strip()}",
                          "fix the file it names; `invoke config` validates everything")
    return out.stdout.split()


@dataclass
class ServiceState:
    service: str
    state: str
    health: str
    ports: str


def ps(profiles=()) -> list[ServiceState]:
    out = subprocess.run([*compose.argv(profiles), "ps", "--all", "--format", "json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise FedopsError(f"docker compose ps failed: {out.stderr.strip()}", "check `docker info`")
    text = out.stdout.strip()
    if not text:
        return []
    # Compose prints one JSON object per line (2.21+) or a list (older).
    rows = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines()]
    states = []
    for r in rows:
        ports = ", ".join(sorted({f"{p['URL']}:{p['PublishedPort']}->{p['TargetPort']}"
                                  for p in r.get("Publishers") or [] if p.get("PublishedPort")}))
        states.append(ServiceState(r["Service"], r["State"], r.get("Health") or "-", ports))
    return sorted(states, key=lambda s: s.service)


def published_ports(profiles=()) -> list[tuple[str, int, str]]:
    out = subprocess.run([*compose.argv(profiles), "config", "--format", "json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return []
    model = json.loads(out.stdout)
    settings = compose.settings()
    by_value = {v: k for k, v in settings.items() if k.endswith("_PORT")}
    result = []
    for svc in model.get("services", {}).values():
        for p in svc.get("ports") or []:
            published = int(str(p.get("published", 0)).split("-")[0] or 0)
            if published:
                result.append((p.get("host_ip") or "0.0.0.0", published,
                               by_value.get(str(published), "the port mapping")))
    return result


def held_ports() -> set[int]:
    """Ports this project's own containers publish already (not a conflict)."""
    import docker
    client = docker.from_env()
    ports = set()
    for ctr in client.containers.list(filters={"label": f"com.docker.compose.project={compose.project_name()}"}):
        for bindings in (ctr.ports or {}).values():
            for b in bindings or []:
                ports.add(int(b["HostPort"]))
    return ports


# ---------------------------------------------------------------- bring-up
def phases(fed: config.Federation) -> list[tuple[str, list[str]]]:
    sites = []
    for org in fed.organisations:
        sites += [org.service, f"siteproxy-{org.name}"]
    return [
        ("3.1 database", ["postgres"]),
        ("3.2 identity", ["keycloak"]),
        ("3.3 edge", ["ctlgate", "nginx"]),
        ("4.1 SuperLink", ["superlink"]),
        ("4.2 SuperNodes", sites),
        ("5 user interface and monitoring", ["jupyterhub", "prometheus", "grafana", "node-exporter", "dcgm"]),
    ]


# A service down or restarting this long counts as a crash loop. Not shorter: a SuperNode
# recreated together with its site proxy could not deactivate on the way out (its way to
# the SuperLink went first), so the new one is refused ("Failed to activate SuperNode")
# until the SuperLink marks the old session offline (about a minute), and its restart
# policy tries again with a growing back-off.
CRASH_LOOP_AFTER = 100


def wait_healthy(names: list[str], timeout: float = 600) -> None:
    """Poll until every named service is healthy (all services have healthchecks); print
    progress; fail early on a crash loop, with the logs' tail and a next step."""
    start = time.time()
    last = ""
    restarting_since: dict[str, float] = {}
    while True:
        states = {s.service: s for s in ps() if s.service in names}
        pending = [n for n in names if n not in states or states[n].health != "healthy"]
        if not pending:
            return
        now = time.time()
        for n in names:
            if n in states and states[n].state in ("restarting", "exited", "dead"):
                restarting_since.setdefault(n, now)
            else:
                restarting_since.pop(n, None)
        crashing = [n for n, t in restarting_since.items() if now - t > CRASH_LOOP_AFTER]
        line = ", ".join(f"{n}: {states[n].health if n in states and states[n].health != '-' else states[n].state if n in states else 'missing'}"
                         for n in pending)
        if line != last:
            print(f"    waiting ({int(now - start)}s) {line}", flush=True)
            last = line
        if crashing or now - start > timeout:
            bad = crashing or pending
            logs = subprocess.run([*compose.argv(), "logs", "--no-color", "--tail", "15", *bad],
                                  capture_output=True, text=True).stdout
            why = "keeps crashing" if crashing else f"is not healthy after {timeout:.0f}s"
            raise FedopsError(f"{', '.join(bad)} {why}; last log lines:\n{logs}",
                              f"see `invoke logs --service {bad[0]}`; fix, then run `invoke up` again")
        time.sleep(2)


def quiet(c, *args: str, profiles=()) -> None:
    """`docker compose ARGS` without its progress lines; its output when it fails."""
    result = compose.run(c, *args, profiles=profiles, echo=False, hide=True, warn=True)
    if not result.ok:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise FedopsError(f"`docker compose {' '.join(args[:2])} ...` failed:\n{tail}",
                          "see `invoke logs`; fix, then run `invoke up` again")


RELOAD_COMMAND = ("python3", "/usr/local/bin/entrypoint.py", "reload")


def reloads_certificates(service: str) -> bool:
    """The NGINX-based services (the edge, the site proxies) load new certificates with a
    graceful reload: open connections finish, SuperNodes stay in their proxy's namespace."""
    return service == "nginx" or service.startswith("siteproxy-")


def up(c, fed: config.Federation, profiles=(), build: bool = True, hooks=None,
       restart: list[str] = ()) -> None:
    """Start every phase in order; services in `restart` (new certificates) that are
    already running are restarted so that they load them."""
    preflight.docker_engine()
    preflight.ports(published_ports(profiles), held_ports())
    defined = set(defined_services(profiles))
    if build:
        from . import images
        images.build(c, profiles=profiles)
    hooks = hooks or {}
    for phase, names in phases(fed):
        names = [n for n in names if n in defined]
        if not names:
            continue
        if phase in hooks:
            hooks[phase](c, fed)
        step(f"phase {phase}: {', '.join(names)}")
        t0 = time.time()
        running = {s.service for s in ps() if s.state == "running"}
        stale = [n for n in names if n in restart and n in running]
        reload_ = [n for n in stale if reloads_certificates(n)]
        restart_ = [n for n in stale if n not in reload_]
        for name in reload_:
            print(f"    new certificates: reloading {name} (no restart)", flush=True)
            quiet(c, "exec", "-T", name, *RELOAD_COMMAND, profiles=profiles)
        # A SuperNode cut off while its site's certificate was refused (revoked, expired)
        # may sit in its restart back-off: start it now rather than in a minute.
        health = {s.service: s.health for s in ps()}
        stuck = [n.replace("siteproxy-", "supernode-", 1) for n in reload_ if n.startswith("siteproxy-")]
        stuck = [n for n in stuck if n in health and health[n] != "healthy"]
        if stuck:
            print(f"    restarting {', '.join(stuck)} (cut off before the new certificate)", flush=True)
            quiet(c, "restart", *stuck, profiles=profiles)
        if restart_:
            print(f"    new certificates: restarting {', '.join(restart_)}", flush=True)
            quiet(c, "restart", *restart_, profiles=profiles)
        quiet(c, "up", "-d", "--no-build", "--remove-orphans", *names, profiles=profiles)
        wait_healthy(names)
        print(f"    healthy in {time.time() - t0:.0f}s", flush=True)
