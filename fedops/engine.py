"""The Docker engine through its SDK: the one place that talks to the engine's API
directly (Compose commands go through fedops/compose.py). Used for what Compose has no
command for: exec'ing a service's own health probe while waiting for it, the ports this
project's containers hold, and short-lived helper containers."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import FedopsError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


@functools.lru_cache(maxsize=1)
def client():
    import docker
    try:
        return docker.from_env(timeout=120)
    except Exception as exc:  # the SDK raises several kinds
        raise FedopsError(f"the Docker engine does not answer ({exc.__class__.__name__})",
                          "start it (e.g. `sudo systemctl start docker`) and check `docker info`")


def ping() -> None:
    try:
        client().ping()
    except FedopsError:
        raise
    except Exception as exc:
        raise FedopsError(f"the Docker engine does not answer ({exc.__class__.__name__})",
                          "start it (e.g. `sudo systemctl start docker`) and check `docker info`")


# Compose labels the images it builds with the project and service too, so a container
# started from such an image by hand (`docker run`) carries them: only Compose's own
# containers have a container number.
NUMBER_LABEL = "com.docker.compose.container-number"


def project_containers(project: str, all: bool = True, sparse: bool = False) -> dict[str, object]:
    """{service: container} of a Compose project (one container per service here).
    sparse: only what the engine's list gives (id, name, labels), without inspecting
    each container, for a caller that reloads the ones it needs (readiness checks)."""
    found = client().containers.list(all=all, sparse=sparse,
                                     filters={"label": [f"{PROJECT_LABEL}={project}", NUMBER_LABEL]})
    labels = (lambda c: c.attrs.get("Labels") or {}) if sparse else (lambda c: c.labels)
    return {labels(c).get(SERVICE_LABEL, c.name): c for c in found}


def held_ports(project: str) -> set[int]:
    """Host ports this project's running containers publish already (not a conflict)."""
    return {int(p["PublicPort"]) for ctr in project_containers(project, all=False, sparse=True).values()
            for p in ctr.attrs.get("Ports") or [] if p.get("PublicPort")}


def network_drift(wanted: dict) -> list[str]:
    """The networks of a Compose model (`networks` of `docker compose config`) that
    exist in the engine with other settings than the model's (internal, driver options):
    Compose keeps an existing network as it is, so such a change needs it recreated."""
    drift = []
    for spec in wanted.values():
        name = spec.get("name")
        try:
            actual = client().networks.get(name).attrs if name else None
        except Exception:   # docker.errors.NotFound: created by `up`
            continue
        if not actual:
            continue
        options = actual.get("Options") or {}
        differs = bool(actual.get("Internal")) != bool(spec.get("internal")) or any(
            options.get(k) != str(v) for k, v in (spec.get("driver_opts") or {}).items())
        if differs:
            drift.append(name)
    return drift


def healthcheck_command(test: list[str] | None) -> list[str] | None:
    """A Compose/Docker healthcheck `test` as an exec argv (None: no probe)."""
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test)


# Passed to every probe: a healthcheck with side effects (the SuperNode's stops a
# SuperNode after consecutive failures) only observes when it sees this.
OBSERVE_ONLY = {"FL_HEALTH_OBSERVE_ONLY": "1"}


@dataclass
class Probe:
    """A service's own health probe, run on demand in its running container."""
    container_id: str
    argv: list[str]

    def __call__(self) -> bool:
        try:
            ctr = client().containers.get(self.container_id)
            if ctr.status != "running":
                return False
            # attached (stdout/stderr), so that the call waits for the exit code
            result = ctr.exec_run(self.argv, environment=OBSERVE_ONLY)
            return result.exit_code == 0
        except Exception:   # the container went away or exec failed: not ready yet
            return False


def image_present(ref: str) -> bool:
    """Whether the engine has the image `ref` (a vendor's base image: fedops/vendor.py)."""
    import docker.errors
    try:
        client().images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


# How long the engine may take to ask a registry about an image before `invoke up` goes
# on without it (a registry behind a firewall that drops packets never answers).
REGISTRY_TIMEOUT = 20


def pull_error(ref: str) -> str | None:
    """None when the engine's registry answers for `ref` (so a build can pull it), else
    the reason in a few words. Asks for the image's manifest through the engine
    (GET /distribution/NAME/json: the engine's own registry settings and proxies), which
    downloads nothing."""
    import docker
    try:
        docker.from_env(timeout=REGISTRY_TIMEOUT).api.inspect_distribution(ref)
        return None
    except Exception as exc:  # the SDK raises several kinds; all mean "cannot be pulled"
        text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
        reason = (text[0] if text else exc.__class__.__name__)
        return reason[:160]


def run_helper(image: str, command: list[str], volumes: dict, network_mode: str = "none") -> bytes:
    """A short-lived helper container (removed afterwards); returns its output."""
    return client().containers.run(image, command, volumes=volumes, remove=True,
                                   network_mode=network_mode, stdout=True, stderr=False)


# Notebook servers are not Compose's: JupyterHub spawns them (services/jupyterhub) as
# jupyter-<project>-<user>, labelled with this prefix, each with a named volume
# jupyter-<project>-home-<user>.
NOTEBOOK_LABEL = "fl.notebook.prefix"


def notebook_prefix(project: str) -> str:
    return f"jupyter-{project}"


def remove_notebooks(project: str, volumes: bool = False) -> list[str]:
    """Remove this project's notebook servers (and, with volumes, their home volumes);
    returns what was removed. Another project's are never touched."""
    prefix = notebook_prefix(project)
    removed = []
    for ctr in client().containers.list(all=True, filters={"label": f"{NOTEBOOK_LABEL}={prefix}"}):
        ctr.remove(force=True)
        removed.append(ctr.name)
    if volumes:
        for vol in client().volumes.list(filters={"name": f"{prefix}-home-"}):
            if vol.name.startswith(f"{prefix}-home-"):
                vol.remove(force=True)
                removed.append(vol.name)
    return removed


NOTEBOOK_HOME = "/home/jovyan"       # where a server mounts its user's volume


def notebook_home_volumes(project: str) -> dict[str, str]:
    """{user: volume} of this project's notebook home volumes."""
    marker = f"{notebook_prefix(project)}-home-"
    return {v.name[len(marker):]: v.name for v in client().volumes.list(filters={"name": marker})
            if v.name.startswith(marker) and len(v.name) > len(marker)}


def volume_to_tar(volume: str, image: str, out) -> None:
    """Write a tar of a volume's contents (numeric owners and modes as stored) to the
    binary file `out`, streamed: a created (never started) helper container mounts the
    volume read-only and the engine archives it."""
    ctr = client().containers.create(image, ["true"], network_mode="none",
                                     volumes={volume: {"bind": NOTEBOOK_HOME, "mode": "ro"}})
    try:
        stream, _ = ctr.get_archive(NOTEBOOK_HOME)        # entries jovyan/...
        for chunk in stream:
            out.write(chunk)
    finally:
        ctr.remove(force=True)


def tar_to_volume(tar_file: str, volume: str, image: str) -> None:
    """Replace a volume's contents with a tar written by volume_to_tar (owners and modes
    kept), in a helper container without network that sees the tar read-only."""
    script = (f"set -e; cd {NOTEBOOK_HOME}; find . -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +; "
              f"tar -xpf /restore/home.tar --numeric-owner --same-owner --strip-components=1")
    try:
        client().containers.run(image, ["sh", "-c", script], remove=True, network_mode="none", user="0:0",
                                volumes={volume: {"bind": NOTEBOOK_HOME, "mode": "rw"},
                                         tar_file: {"bind": "/restore/home.tar", "mode": "ro"}})
    except Exception as exc:   # docker.errors.ContainerError and friends
        raise FedopsError(f"restoring the volume {volume} failed: {exc}",
                          "check `docker info` and the backup's tar, then run the restore again")
