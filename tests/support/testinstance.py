"""The test suite's own deployment: an instance folder outside the checkout
(fedops/paths.py, FL_INSTANCE_DIR) with its own Compose project, CA, secrets,
configuration, published ports and subnets, created and torn down by the test session.
The operator's deployment (the checkout's instance and its Compose project) is only
read, to prove it was left as it was (operator_state)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fedops import engine, instances

PREFIX = "fltest-"
DOMAIN = "fltest.localhost"       # not the default fl.localhost: nothing may assume it
# Its own image tags: the operator's images are never rebuilt. Two checkouts testing
# at once on one engine (a branch beside main) each set FL_TEST_IMAGE_TAG.
IMAGE_TAG = os.environ.get("FL_TEST_IMAGE_TAG", "test")


def _labelled(kind, label: str) -> list:
    """Containers (all), volumes or networks carrying a label (`key` or `key=value`)."""
    if kind == "containers":
        return engine.client().containers.list(all=True, filters={"label": label})
    return getattr(engine.client(), kind).list(filters={"label": label})


def _labels(obj) -> dict:
    return obj.labels if hasattr(obj, "labels") else (obj.attrs.get("Labels") or {})


def remove_stale_projects() -> list[str]:
    """Test projects left by an interrupted session (their instance folder is gone)."""
    tmp = Path(tempfile.gettempdir())
    stale = set()
    for kind in ("containers", "volumes", "networks"):
        for obj in _labelled(kind, engine.PROJECT_LABEL):
            project = _labels(obj).get(engine.PROJECT_LABEL, "")
            if project.startswith(PREFIX) and not (tmp / project).exists():
                stale.add(project)
    for project in sorted(stale):
        label = f"{engine.PROJECT_LABEL}={project}"
        engine.remove_notebooks(project, volumes=True)     # the hub's, not Compose's
        for ctr in _labelled("containers", label):
            ctr.remove(force=True)
        for kind in ("volumes", "networks"):
            for obj in _labelled(kind, label):
                obj.remove()
    return sorted(stale)


def create(operator_settings: dict[str, str], name: str = "", **extra: str) -> Path:
    """The test deployment's instance folder (fedops/instances.py): its own project,
    image tags, ports, subnets and domain."""
    return instances.create(operator_settings, f"{PREFIX}{name}", IMAGE_TAG, DOMAIN, **extra)


destroy = instances.destroy


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
    label = f"{engine.PROJECT_LABEL}={project}"
    containers = {c.name: (c.id, c.attrs["State"]["Status"], c.attrs["State"]["StartedAt"])
                  for c in _labelled("containers", label)}
    volumes = sorted(v.name for v in _labelled("volumes", label))
    networks = sorted(f"{n.name} {n.id}" for n in _labelled("networks", label))
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
