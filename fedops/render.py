"""Files rendered from the configuration into build/ (git-ignored)."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2

from . import paths
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


def federation_json(fed: Federation) -> str:
    return json.dumps(fed.public(), indent=2, sort_keys=True) + "\n"


def organisations_overlay(fed: Federation, template: Path = ORGS_TEMPLATE) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template.read_text()).render(
        fed=fed, organisations=fed.organisations, num_partitions=len(fed.organisations))


def gpu_sites_overlay(fed: Federation, template: Path = GPU_SITES_TEMPLATE) -> str:
    """GPU image and reservation for every organisation's SuperNode (used only with the
    gpu profile: fedops.compose.files)."""
    return organisations_overlay(fed, template)


def compose_env(fed: Federation) -> str:
    """Compose variables that come from federation.yaml (the domain names network aliases)."""
    return (f"# Rendered from federation.yaml by the tasks; do not edit.\n"
            f"FL_DOMAIN={fed.domain}\nFL_NUM_PARTITIONS={len(fed.organisations)}\n")


def render_all(fed: Federation, build: Path = paths.BUILD_DIR) -> list[str]:
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
