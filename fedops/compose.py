"""One place that builds every `docker compose` command line.

Which files and profiles are used is decided here (and by FL_* environment variables),
never by hand-edited commands. Every command is printed before it runs.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Iterable

from . import paths

ORGS_OVERLAY = paths.BUILD_DIR / "compose.organisations.yml"
GPU_OVERLAY = paths.ROOT / "compose.gpu.yml"
# Rendered per organisation (services/supernode/compose.gpu.yml.j2): the SuperNodes' GPU
# image and reservation. Used, like GPU_OVERLAY, only with the gpu profile.
GPU_SITES_OVERLAY = paths.BUILD_DIR / "compose.gpu-sites.yml"


def env_file_values(path: Path) -> dict[str, str]:
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def settings() -> dict[str, str]:
    """.env, then .env.local, then the process environment (highest)."""
    merged = {}
    for env in env_files():
        merged.update(env_file_values(env))
    merged.update({k: v for k, v in os.environ.items() if k.startswith(("FL_", "COMPOSE_", "IMAGE_"))})
    return merged


def env_files() -> list[Path]:
    """.env (committed defaults), build/federation.env (from federation.yaml), .env.local."""
    candidates = [paths.ROOT / ".env", paths.BUILD_DIR / "federation.env", paths.ROOT / ".env.local"]
    return [p for p in candidates if p.exists()]


def project_name() -> str:
    return settings().get("COMPOSE_PROJECT_NAME", "flfed")


def files(profiles: Iterable[str] = ()) -> list[Path]:
    out = [paths.ROOT / "docker-compose.yml"]
    if ORGS_OVERLAY.exists():
        out.append(ORGS_OVERLAY)
    if "gpu" in profiles:
        out.append(GPU_OVERLAY)
        if GPU_SITES_OVERLAY.exists():
            out.append(GPU_SITES_OVERLAY)
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


def command(*args: str, profiles: Iterable[str] = ()) -> str:
    return shlex.join([*argv(profiles), *args])


def run(c, *args: str, profiles: Iterable[str] = (), echo: bool = True, **kwargs):
    """Run `docker compose ARGS` through an invoke context, printing it first."""
    cmd = command(*args, profiles=profiles)
    if echo:
        print(f"$ {cmd}", flush=True)
    return c.run(cmd, **kwargs)


def exec_or_run(c, service: str, cmd: str, running: bool, profiles: Iterable[str] = (), **kwargs):
    """`exec` in a running service's container, otherwise a one-off `run --rm`."""
    if running:
        return run(c, "exec", "-T", service, *shlex.split(cmd), profiles=profiles, **kwargs)
    return run(c, "run", "--rm", "--no-deps", service, *shlex.split(cmd), profiles=profiles, **kwargs)
