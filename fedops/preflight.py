"""Checks before bring-up, each failing with what to do next."""
from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys

from .errors import FedopsError


def docker_engine() -> None:
    if not shutil.which("docker"):
        raise FedopsError("the docker command is not installed",
                          "install Docker Engine >= 20.10 with the Compose v2 plugin")
    try:
        import docker
        docker.from_env().ping()
    except Exception as exc:  # the SDK raises several kinds
        raise FedopsError(f"the Docker engine does not answer ({exc.__class__.__name__})",
                          "start it (e.g. `sudo systemctl start docker`) and check `docker info`")
    proc = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FedopsError("Docker Compose v2 (`docker compose`) is not installed",
                          "install the docker-compose-plugin package (Compose v1 is not supported)")


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def ports(published: list[tuple[str, int, str]], ours: set[int]) -> None:
    """published: (address, port, setting name); ours: ports our containers already hold."""
    for address, port, setting in published:
        if port in ours:
            continue
        if not port_free(address, port):
            raise FedopsError(
                f"port {port} on {address} is in use by another program",
                f"stop that program, or choose another port: {setting}=<port> in .env.local")


def confirm(question: str, yes: bool, action: str) -> bool:
    """Before a destructive action: True with --yes or when the user types yes; refuses
    without a terminal (naming `action`, e.g. "restoring replaces live data")."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise FedopsError(f"{action} and needs a confirmation", "run it in a terminal, or add --yes")
    return input(f"{question} Type 'yes': ").strip() == "yes"
