"""The test suite's own deployment: an instance folder outside the checkout
(fedops/paths.py, FL_INSTANCE_DIR) with its own Compose project, CA, secrets,
configuration, published ports and subnets, created and torn down by the test session.
The operator's deployment (the checkout's instance and its Compose project) is only
read, to prove it was left as it was (operator_state)."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PREFIX = "fltest-"
DOMAIN = "fltest.localhost"       # not the default fl.localhost: nothing may assume it
# Its own image tags: the operator's images are never rebuilt. Two checkouts testing
# at once on one engine (a branch beside main) each set FL_TEST_IMAGE_TAG.
IMAGE_TAG = os.environ.get("FL_TEST_IMAGE_TAG", "test")
# Subnets are /24s from this range (not Docker's default pools), checked against the
# engine's networks and the host's routes.
SUBNET_RANGE = ipaddress.ip_network("10.200.0.0/13")
NETWORKS = ("SERVICES", "CLIENTS", "MONITORING", "SUPERLINK", "INGRESS", "NOTEBOOKS", "DOCKERAPI")
PORTS = ("FL_HTTPS_PORT", "FL_HTTP_PORT", "FL_POSTGRES_PORT", "FL_KEYCLOAK_ADMIN_PORT")
# Machine facts the test instance takes over from the operator's settings: how to
# build images here, nothing about the deployment itself.
MACHINE_SETTINGS = ("FL_BUILD_EXTRA_CA", "BASE_IMAGE")


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)


def free_ports(n: int) -> list[int]:
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


def taken_networks() -> list[ipaddress.IPv4Network]:
    """The engine's networks' subnets and the host's routes."""
    taken = []
    ids = docker("network", "ls", "-q").stdout.split()
    if ids:
        for net in json.loads(docker("network", "inspect", *ids).stdout or "[]"):
            for cfg in (net.get("IPAM") or {}).get("Config") or []:
                try:
                    taken.append(ipaddress.ip_network(cfg.get("Subnet", ""), strict=False))
                except ValueError:
                    pass
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        dest, mask = (int(fields[1], 16), int(fields[7], 16))
        if mask:
            net = ipaddress.ip_network((socket.inet_ntoa(dest.to_bytes(4, "little")),
                                        bin(mask).count("1")), strict=False)
            taken.append(net)
    return [n for n in taken if n.version == 4]


def free_subnets(n: int) -> list[str]:
    taken = taken_networks()
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


def project_of(labels: dict) -> str:
    return (labels or {}).get("com.docker.compose.project", "")


def remove_stale_projects() -> list[str]:
    """Test projects left by an interrupted session (their instance folder is gone)."""
    tmp = Path(tempfile.gettempdir())
    stale = set()
    for kind in ("ps -a", "volume ls", "network ls"):
        out = docker(*kind.split(), "--filter", "label=com.docker.compose.project",
                     "--format", '{{.Label "com.docker.compose.project"}}').stdout.split()
        stale |= {p for p in out if p.startswith(PREFIX) and not (tmp / p).exists()}
    for project in sorted(stale):
        label = f"label=com.docker.compose.project={project}"
        for kind, remove in (("ps -aq", "rm -f"), ("volume ls -q", "volume rm"), ("network ls -q", "network rm")):
            ids = docker(*kind.split(), "--filter", label).stdout.split()
            if ids:
                docker(*remove.split(), *ids)
    return sorted(stale)


def create(operator_settings: dict[str, str], name: str = "", **extra: str) -> Path:
    """A new instance folder with its .env.local (its own project name, image tags, free
    ports and subnets, this machine's build settings, then `extra`) and its
    federation.local.yaml."""
    name = f"{PREFIX}{name}{secrets.token_hex(4)}"
    folder = Path(tempfile.gettempdir()) / name
    folder.mkdir(mode=0o700)
    values = {"COMPOSE_PROJECT_NAME": name, "IMAGE_TAG": IMAGE_TAG}
    values.update(dict(zip(PORTS, map(str, free_ports(len(PORTS))))))
    values.update({f"FL_{n}_SUBNET": s for n, s in zip(NETWORKS, free_subnets(len(NETWORKS)))})
    for key in MACHINE_SETTINGS:
        if operator_settings.get(key):
            value = operator_settings[key]
            if key == "FL_BUILD_EXTRA_CA":   # relative to the checkout: make it absolute
                from fedops import paths
                value = str((paths.ROOT / value).resolve())
            values[key] = value
    values.update(extra)
    (folder / ".env.local").write_text(
        "# The test suite's throwaway deployment (tests/support/testinstance.py).\n"
        + "".join(f"{k}={v}\n" for k, v in values.items()))
    (folder / "federation.local.yaml").write_text(f"domain: {DOMAIN}\n")
    return folder


def destroy(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the operator's deployment
def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except PermissionError:   # a key given to a service's uid: its size and time instead
        st = path.stat()
        return f"unreadable size={st.st_size} mtime={st.st_mtime_ns}"


def operator_state(root: Path, project: str) -> dict:
    """Everything of the operator's deployment a test could change: its containers
    (id, state, start time), volumes, networks, the CA's fingerprint and the hash of
    every file in its instance (the checkout): ca/pki, ca/deploy, secrets, build,
    federation.local.yaml, .env.local."""
    label = f"label=com.docker.compose.project={project}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    containers = {}
    for c in json.loads(docker("inspect", *ids).stdout) if ids else []:
        containers[c["Name"]] = (c["Id"], c["State"]["Status"], c["State"]["StartedAt"])
    volumes = sorted(docker("volume", "ls", "-q", "--filter", label).stdout.split())
    networks = sorted(docker("network", "ls", "--filter", label, "--format", "{{.Name}} {{.ID}}").stdout.splitlines())
    files = {}
    for part in ("ca/pki", "ca/deploy", "secrets", "build", "federation.local.yaml", ".env.local", "backups"):
        path = root / part
        if path.is_file():
            files[part] = _digest(path)
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                files[str(f.relative_to(root))] = _digest(f)
    ca = root / "ca" / "pki" / "ca.crt"
    return {"project": project, "containers": containers, "volumes": volumes, "networks": networks,
            "ca_fingerprint": _digest(ca) if ca.exists() else None, "files": files}


def operator_snapshot() -> dict:
    """The operator's deployment as the tasks would find it from this shell: the
    checkout's instance and its Compose project."""
    from fedops import compose, paths
    saved = os.environ.pop(paths.INSTANCE_ENV, None)
    try:
        return operator_state(paths.ROOT, compose.project_name())
    finally:
        if saved is not None:
            os.environ[paths.INSTANCE_ENV] = saved


def differences(before: dict, after: dict) -> list[str]:
    out = []
    for key in ("project", "ca_fingerprint", "volumes", "networks"):
        if before[key] != after[key]:
            out.append(f"{key}: {before[key]} -> {after[key]}")
    for key in ("containers", "files"):
        for name in sorted(set(before[key]) | set(after[key])):
            if before[key].get(name) != after[key].get(name):
                out.append(f"{key[:-1]} {name}: {before[key].get(name)} -> {after[key].get(name)}")
    return out
