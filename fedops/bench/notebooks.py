"""Notebook servers as researchers meet them: the time from signing in at the hub to a
running server (the image present), the hub's and an idle server's memory, and many
users starting their servers at once.

Throwaway realm users `benchnbNN` (group jupyter_users, random passwords) sign in at
hub.<domain> through Keycloak and the edge, as a browser would (fedops/signin.py), and
start their own servers through the hub's REST API. Afterwards their servers are
stopped, their hub records (as the first jupyter_admins user), home volumes and realm
users deleted. The operator's users and servers are not touched."""
from __future__ import annotations

import json
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import config, engine, kcadmin, paths
from ..errors import FedopsError
from ..signin import HubUser
from .common import MIB, log, median, sigint_deferred
from .memory import idle_memory

# Letters and digits only: DockerSpawner escapes other characters in container and
# volume names (bench-nb -> bench-2dnb), and the clean-up finds them by this prefix.
USER_PREFIX = "benchnb"


@dataclass
class NotebookFigures:
    sign_in: list[float] = field(default_factory=list)          # s, sign-in alone
    to_ready: list[float] = field(default_factory=list)         # s, sign-in start to server ready
    concurrent: int = 0
    concurrent_ready: int = 0
    concurrent_wall: float | None = None                        # s, all started to all ready
    concurrent_each: list[float] = field(default_factory=list)  # s, each server's own time
    server_memory: list[int] = field(default_factory=list)      # bytes, idle servers
    hub_memory: int | None = None
    note: str = ""


def hub_url() -> str:
    return json.loads((paths.BUILD_DIR / "federation.json").read_text())["urls"]["hub"]


def admin_of(fed: config.Federation) -> str:
    for u in fed.users:
        if "jupyter_admins" in u.groups:
            return u.username
    raise FedopsError("no user of federation.yaml is in group jupyter_admins",
                      "the benchmark deletes its hub users as one: add one to federation.yaml")


def measure(fed: config.Federation, client, project: str, repeat: int = 5, concurrent: int = 20) -> NotebookFigures:
    n = NotebookFigures(concurrent=concurrent)
    hub, ca = hub_url(), paths.PKI_DIR / "ca.crt"
    users = {f"{USER_PREFIX}{i:02d}": secrets.token_urlsafe(18) for i in range(concurrent)}
    admin_name = admin_of(fed)
    admin_pw = json.loads((paths.SECRETS_DIR / "keycloak_users").read_text())[admin_name]
    prefix = engine.notebook_prefix(project)
    log(f"notebooks: {len(users)} throwaway users ({USER_PREFIX}NN) in jupyter_users")
    with kcadmin.admin_client() as kc:
        for name, pw in users.items():
            kcadmin.create_user(kc, name, pw, groups=("jupyter_users",))
    try:
        first = next(iter(users))
        for i in range(repeat):
            t0 = time.monotonic()
            with HubUser(hub, ca, first).sign_in(users[first]) as u:
                signed_in = time.monotonic() - t0
                u.start()
                u.wait_ready()
                n.to_ready.append(time.monotonic() - t0)
                n.sign_in.append(signed_in)
                log(f"  {i + 1}/{repeat}: signed in {signed_in:.1f} s, server ready {n.to_ready[-1]:.1f} s after sign-in began")
                u.stop()
        log(f"  {concurrent} users sign in, then start their servers at once")
        sessions = [HubUser(hub, ca, name).sign_in(pw) for name, pw in users.items()]
        try:
            t0 = time.monotonic()

            def start_and_wait(u: HubUser) -> float:
                u.start()
                return u.wait_ready(timeout=600)

            with ThreadPoolExecutor(max_workers=concurrent) as pool:
                futures = [pool.submit(start_and_wait, u) for u in sessions]
                for fut in futures:
                    try:
                        n.concurrent_each.append(fut.result())
                    except FedopsError as exc:
                        n.note = f"a server did not start: {exc.problem}"
            n.concurrent_ready = len(n.concurrent_each)
            if n.concurrent_ready == concurrent:
                n.concurrent_wall = time.monotonic() - t0
            log(f"  {n.concurrent_ready}/{concurrent} ready"
                + (f" in {n.concurrent_wall:.1f} s" if n.concurrent_wall else ""))
            time.sleep(10)                       # let JupyterLab settle before reading memory
            for ctr in client.containers.list(filters={"name": f"{prefix}-{USER_PREFIX}"}):
                used = idle_memory(ctr)
                if used:
                    n.server_memory.append(used)
            hub_ctr = engine.project_containers(project, all=False).get("jupyterhub")
            n.hub_memory = idle_memory(hub_ctr) if hub_ctr else None
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda u: u.stop(), sessions))
        finally:
            for u in sessions:
                u.close()
    finally:
        with sigint_deferred():
            cleanup(hub, ca, users, admin_name, admin_pw, project, client)
    return n


def cleanup(hub: str, ca, users: dict[str, str], admin_name: str, admin_pw: str, project: str, client) -> None:
    """Stop and delete the bench users' servers, hub records, home volumes and realm users."""
    prefix = engine.notebook_prefix(project)
    for ctr in client.containers.list(all=True, filters={"name": f"{prefix}-{USER_PREFIX}"}):
        ctr.remove(force=True)
    try:
        with HubUser(hub, ca, admin_name).sign_in(admin_pw) as admin:
            for name in users:
                admin.api("DELETE", f"/users/{name}")
    except FedopsError as exc:
        log(f"  could not delete the bench users from the hub: {exc.problem}")
    for vol in client.volumes.list(filters={"name": f"{prefix}-home-{USER_PREFIX}"}):
        vol.remove(force=True)
    with kcadmin.admin_client() as kc:
        for name in users:
            kcadmin.delete_user(kc, name)
    log(f"  removed the {len(users)} bench users, their servers and home volumes")


def render(n: NotebookFigures | None) -> list[str]:
    lines = ["", "## Notebook servers", "",
             "Throwaway users of group `jupyter_users` sign in at `hub.<domain>` through Keycloak and",
             "the edge as a browser would (login form, PKCE) and start their own servers through",
             "the hub's REST API; the notebook image is present. The time runs from the first",
             "request of the sign-in to the hub reporting the server ready.", ""]
    if n is None:
        return lines + ["Not measured in this run."]
    to_ready, sign_in = median(n.to_ready), median(n.sign_in)
    lines += ["| | |", "|---|---|"]
    if to_ready is not None:
        lines.append(f"| sign-in to a running server, median of {len(n.to_ready)} | {to_ready:.1f} s "
                     f"(of which sign-in {sign_in:.1f} s; all: {', '.join(f'{t:.1f}' for t in n.to_ready)}) |")
    if n.concurrent:
        wall = f"all ready {n.concurrent_wall:.1f} s after the first start" if n.concurrent_wall else "not all ready"
        each = f"; each server's own time median {median(n.concurrent_each):.1f} s, slowest " \
               f"{max(n.concurrent_each):.1f} s" if n.concurrent_each else ""
        lines.append(f"| {n.concurrent} users starting at once | {n.concurrent_ready} of {n.concurrent} running, "
                     f"{wall}{each} |")
    if n.server_memory:
        lines.append(f"| an idle server (JupyterLab, no kernel) | {statistics.median(n.server_memory) / MIB:.0f} MiB "
                     f"(median of {len(n.server_memory)}; most {max(n.server_memory) / MIB:.0f} MiB) |")
    if n.hub_memory:
        lines.append(f"| the hub with {n.concurrent_ready} servers running | {n.hub_memory / MIB:.0f} MiB |")
    if n.note:
        lines += ["", f"Note: {n.note}."]
    return lines
