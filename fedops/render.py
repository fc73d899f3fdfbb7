"""Files rendered from the configuration into build/ (git-ignored)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2

from . import compose, paths, services
from .config import Federation

ORGS_TEMPLATE = paths.SERVICES_DIR / "supernode" / "compose.organisations.yml.j2"
# The per-organisation half of the GPU profile (compose.gpu.yml holds the rest).
GPU_SITES_TEMPLATE = paths.SERVICES_DIR / "supernode" / "compose.gpu.yml.j2"


def write_if_changed(path: Path, text: str) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def federation_json(fed: Federation, https_port: int | None = None) -> str:
    """The non-secret view mounted into containers at /etc/fl/federation.json: the
    federation (domain, organisations, users) and the public hosts (names, URLs with the
    published HTTPS port, zones)."""
    port = https_port if https_port is not None else int(compose.setting("FL_HTTPS_PORT", "443"))
    return json.dumps({**fed.public(), **services.public_view(fed, port)}, indent=2, sort_keys=True) + "\n"


def organisations_overlay(fed: Federation, template: Path = ORGS_TEMPLATE) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template.read_text()).render(
        fed=fed, organisations=fed.organisations, num_partitions=len(fed.organisations),
        supernode_cpu_shares=services.SUPERNODE_CPU_SHARES)


def gpu_sites_overlay(fed: Federation, template: Path = GPU_SITES_TEMPLATE) -> str:
    """GPU image and reservation for every organisation's SuperNode (used only with the
    gpu profile: fedops.compose.files)."""
    return organisations_overlay(fed, template)


def docker_socket_gid(path: str = "/var/run/docker.sock") -> int:
    """The engine socket's group: the Docker API proxy joins it (services/dockerproxy)."""
    try:
        return os.stat(path).st_gid
    except OSError:
        return 0


def compose_env(fed: Federation, https_port: int | None = None) -> str:
    """Compose variables that come from federation.yaml and fedops/services.py: the
    domain, the public hostnames (the edge's network aliases) and URLs, the service users."""
    port = https_port if https_port is not None else int(compose.setting("FL_HTTPS_PORT", "443"))
    values = {"FL_DOMAIN": fed.domain, "FL_NUM_PARTITIONS": str(len(fed.organisations)),
              **services.compose_variables(fed, port), "FL_DOCKER_GID": str(docker_socket_gid()),
              # the egress proxy's allow-list (services/egress-proxy): a change restarts it
              "FL_NOTEBOOKS_EGRESS": ",".join(fed.notebooks.egress)}
    return ("# Rendered from federation.yaml and fedops/services.py by the tasks; do not edit.\n"
            + "".join(f"{k}={v}\n" for k, v in values.items()))


def render_all(fed: Federation, build: Path | None = None) -> list[str]:
    build = build or paths.BUILD_DIR
    changed = []
    if write_if_changed(build / "federation.env", compose_env(fed)):
        changed.append("federation.env")
    if write_if_changed(build / "federation.json", federation_json(fed)):
        changed.append("federation.json")
    if ORGS_TEMPLATE.exists() and write_if_changed(build / "compose.organisations.yml",
                                                   organisations_overlay(fed)):
        changed.append("compose.organisations.yml")
    if GPU_SITES_TEMPLATE.exists() and write_if_changed(build / "compose.gpu-sites.yml",
                                                        gpu_sites_overlay(fed)):
        changed.append("compose.gpu-sites.yml")
    return changed
