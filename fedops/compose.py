"""One place that builds and runs every `docker compose` command line.

Which files, env files and profiles are used is decided here (and by the settings
below), never by hand-edited commands. Commands that change the stack (build, up,
restart, exec of a reload, down) are printed before they run when the caller asks for
it (`echo=True`, the tasks' default); read-only queries (ps, config, logs captured for
an error message) are not.

Settings are read the way Compose reads them: the committed `.env`, the rendered
`build/federation.env`, the instance's `.env.local`, then the process environment,
which wins. The env files are parsed by python-dotenv (comments, `export`, quotes,
`${VAR}` references), and values Compose would interpolate are validated here, with
an error naming the key and the file it came from.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Iterable

from dotenv import dotenv_values

from . import paths
from .errors import FedopsError

GPU_OVERLAY = paths.ROOT / "compose.gpu.yml"
DEFAULT_PROJECT = "flfed"
# Process-environment variables that take part in the settings even when no env file
# names them (the rest of the environment is only consulted for keys the files set).
ENV_PREFIXES = ("FL_", "COMPOSE_", "IMAGE_", "BASE_IMAGE")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")   # Compose's rule for project names
DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")


def orgs_overlay() -> Path:
    """The SuperNode sites, rendered per organisation (fedops/render.py)."""
    return paths.BUILD_DIR / "compose.organisations.yml"


def gpu_sites_overlay() -> Path:
    """The per-organisation half of the GPU profile (services/supernode/compose.gpu.yml.j2)."""
    return paths.BUILD_DIR / "compose.gpu-sites.yml"


def env_files() -> list[Path]:
    """.env (committed defaults), build/federation.env (from federation.yaml), .env.local."""
    candidates = [paths.ROOT / ".env", paths.BUILD_DIR / "federation.env", paths.LOCAL_ENV]
    return [p for p in candidates if p.exists()]


# The env files' parse, kept while neither their text nor the environment changes: one `invoke
# up` asks for settings a dozen times (project name, ports, health intervals).
_parsed: dict[tuple, dict[str, tuple[str, str]]] = {}


def settings_with_origin() -> dict[str, tuple[str, str]]:
    """{key: (value, where it came from)}; the process environment wins, as in Compose."""
    files = env_files()
    key = (tuple((str(p), p.read_bytes()) for p in files), tuple(sorted(os.environ.items())))
    if key not in _parsed:
        _parsed.clear()
        _parsed[key] = _read_settings(files)
    return dict(_parsed[key])


def _read_settings(files: list[Path]) -> dict[str, tuple[str, str]]:
    merged: dict[str, tuple[str, str]] = {}
    for path in files:
        for key, value in dotenv_values(path, interpolate=True).items():
            merged[key] = ("" if value is None else value, str(path))
    for key, value in os.environ.items():
        if key in merged or key.startswith(ENV_PREFIXES):
            merged[key] = (value, "the environment")
    return merged


def settings() -> dict[str, str]:
    """The Compose variables as Compose sees them (validated)."""
    values = settings_with_origin()
    validate(values)
    return {k: v for k, (v, _) in values.items()}


def validate(values: dict[str, tuple[str, str]]) -> None:
    """Raise a FedopsError naming the key and its file for a value Compose would choke
    on or read differently: ports, subnets, addresses, durations, the project name."""
    for key, (value, origin) in sorted(values.items()):
        if not key.startswith(("FL_", "COMPOSE_PROJECT_NAME")):
            continue
        fix = f"fix {key} in {origin}" if origin != "the environment" else f"fix or unset {key} in your environment"
        if key.endswith("_PORT"):
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise FedopsError(f"{key}={value!r} ({origin}) is not a port number", f"{fix}: 1 to 65535")
        elif key.endswith("_SUBNET"):
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise FedopsError(f"{key}={value!r} ({origin}) is not a subnet ({exc})",
                                  f"{fix}: a network in CIDR form such as 172.20.0.0/16")
        elif key.endswith("_BIND_ADDRESS"):
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise FedopsError(f"{key}={value!r} ({origin}) is not an IP address",
                                  f"{fix}: 127.0.0.1 (this machine only) or an address of one of its interfaces")
        elif key.startswith("FL_HEALTH_") and key != "FL_HEALTH_RETRIES":
            if not DURATION_RE.match(value):
                raise FedopsError(f"{key}={value!r} ({origin}) is not a duration", f"{fix}: e.g. 10s")
        elif key == "COMPOSE_PROJECT_NAME" and not PROJECT_RE.match(value):
            raise FedopsError(f"COMPOSE_PROJECT_NAME={value!r} ({origin}) is not a Compose project name",
                              f"{fix}: lower-case letters, digits, '-' and '_', starting with a letter or digit")


def setting(name: str, default: str = "") -> str:
    return settings().get(name, default)


def project_name() -> str:
    return setting("COMPOSE_PROJECT_NAME", DEFAULT_PROJECT)


def files(profiles: Iterable[str] = ()) -> list[Path]:
    profiles = list(profiles)
    out = [paths.ROOT / "docker-compose.yml"]
    if orgs_overlay().exists():
        out.append(orgs_overlay())
    if "gpu" in profiles:
        out.append(GPU_OVERLAY)
        if gpu_sites_overlay().exists():
            out.append(gpu_sites_overlay())
    return out


def argv(profiles: Iterable[str] = ()) -> list[str]:
    profiles = list(profiles)
    cmd = ["docker", "compose", "--project-directory", str(paths.ROOT), "-p", project_name()]
    for env in env_files():
        cmd += ["--env-file", str(env)]
    for f in files(profiles):
        cmd += ["-f", str(f)]
    for p in profiles:
        cmd += ["--profile", p]
    return cmd


def environment() -> dict[str, str]:
    """The environment Compose runs in: the instance folder is passed on (the compose
    files mount ${FL_INSTANCE_DIR:-.}/ca/deploy/..., secrets and build/ from it)."""
    return {**os.environ, paths.INSTANCE_ENV: str(paths.instance())}


def command(*args: str, profiles: Iterable[str] = ()) -> str:
    return shlex.join([*argv(profiles), *args])


def run(c, *args: str, profiles: Iterable[str] = (), echo: bool = True, **kwargs):
    """Run `docker compose ARGS` through an invoke context, printing it first."""
    cmd = command(*args, profiles=profiles)
    if echo:
        print(f"$ {cmd}", flush=True)
    return c.run(cmd, env={paths.INSTANCE_ENV: str(paths.instance())}, **kwargs)


def call(*args: str, profiles: Iterable[str] = (), echo: bool = False, check: bool = False,
         timeout: float | None = 1800, text: bool = True, stdin=None, input=None,
         stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run `docker compose ARGS` as a subprocess (captured by default); print it first
    when echo. The one place the tasks' modules start Compose outside invoke."""
    cmd = [*argv(profiles), *args]
    if echo:
        print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, stdin=stdin, input=input, stdout=stdout, stderr=stderr, text=text,
                          timeout=timeout, env=environment())
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode(errors="replace")
        raise FedopsError(f"`docker compose {' '.join(args[:3])} ...` failed: {err.strip()[-800:]}",
                          "see `invoke status` and `invoke logs`")
    return proc


def exec_or_run(c, service: str, cmd: str, running: bool, profiles: Iterable[str] = (), **kwargs):
    """`exec` in a running service's container, otherwise a one-off `run --rm`."""
    if running:
        return run(c, "exec", "-T", service, *shlex.split(cmd), profiles=profiles, **kwargs)
    return run(c, "run", "--rm", "--no-deps", service, *shlex.split(cmd), profiles=profiles, **kwargs)
