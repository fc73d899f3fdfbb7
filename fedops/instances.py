"""Throwaway deployments beside the operator's: an instance folder (fedops/paths.py,
FL_INSTANCE_DIR) with its own Compose project, image tags, free published ports and
free subnets, so it shares the engine with the operator's deployment without touching
it. The test suite and the bring-up benchmark use them."""
from __future__ import annotations

import ipaddress
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

from . import engine, paths

# Subnets are /24s from this range (not Docker's default pools), checked against the
# engine's networks and the host's routes.
SUBNET_RANGE = ipaddress.ip_network("10.200.0.0/13")
NETWORKS = ("SERVICES", "CLIENTS", "MONITORING", "SUPERLINK", "INGRESS", "NOTEBOOKS", "DOCKERAPI", "EGRESS")
PORTS = ("FL_HTTPS_PORT", "FL_HTTP_PORT", "FL_POSTGRES_PORT", "FL_KEYCLOAK_ADMIN_PORT")
# Machine facts an instance takes over from the operator's settings: how to build
# images here, nothing about the deployment itself.
MACHINE_SETTINGS = ("FL_BUILD_EXTRA_CA", "BASE_IMAGE")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def host_routes(route_table: str) -> list[ipaddress.IPv4Network]:
    """The destinations of /proc/net/route (the default route left out)."""
    nets = []
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        dest, mask = int(fields[1], 16), int(fields[7], 16)
        if mask:
            nets.append(ipaddress.ip_network((socket.inet_ntoa(dest.to_bytes(4, "little")),
                                              bin(mask).count("1")), strict=False))
    return nets


def taken_networks() -> list[ipaddress.IPv4Network]:
    """The engine's networks' subnets and the host's routes."""
    taken = []
    for net in engine.client().networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                taken.append(ipaddress.ip_network(cfg.get("Subnet", ""), strict=False))
            except ValueError:
                pass
    route_table = Path("/proc/net/route")
    if route_table.exists():
        taken += host_routes(route_table.read_text())
    return [n for n in taken if n.version == 4]


def free_subnets(n: int, taken: list[ipaddress.IPv4Network] | None = None) -> list[str]:
    """n /24 subnets of SUBNET_RANGE that overlap nothing taken (from a random start, so
    two instances created at once rarely race for the same ones)."""
    taken = list(taken_networks() if taken is None else taken)
    candidates = list(SUBNET_RANGE.subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    chosen = []
    for net in candidates[start:] + candidates[:start]:
        if not any(net.overlaps(t) for t in taken):
            chosen.append(net)
            taken.append(net)
            if len(chosen) == n:
                return [str(c) for c in chosen]
    raise RuntimeError(f"no free /24 subnets left in {SUBNET_RANGE}")


def create(operator_settings: dict[str, str], prefix: str, image_tag: str, domain: str,
           **extra: str) -> Path:
    """A new instance folder (under the temporary directory, named like its Compose
    project) with its .env.local: its own project name and image tags, free ports and
    subnets, this machine's build settings, then `extra`; and its federation.local.yaml."""
    name = f"{prefix}{secrets.token_hex(4)}"
    folder = Path(tempfile.gettempdir()) / name
    folder.mkdir(mode=0o700)
    values = {"COMPOSE_PROJECT_NAME": name, "IMAGE_TAG": image_tag}
    values.update(dict(zip(PORTS, map(str, free_ports(len(PORTS))))))
    values.update({f"FL_{n}_SUBNET": s for n, s in zip(NETWORKS, free_subnets(len(NETWORKS)))})
    for key in MACHINE_SETTINGS:
        if operator_settings.get(key):
            value = operator_settings[key]
            if key == "FL_BUILD_EXTRA_CA":   # relative to the checkout: make it absolute
                value = str((paths.ROOT / value).resolve())
            values[key] = value
    values.update(extra)
    (folder / ".env.local").write_text(
        "# A throwaway deployment (fedops/instances.py).\n"
        + "".join(f"{k}={v}\n" for k, v in values.items()))
    (folder / "federation.local.yaml").write_text(f"domain: {domain}\n")
    return folder


def destroy(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
