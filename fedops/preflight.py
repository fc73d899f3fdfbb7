"""Checks before bring-up, each failing with what to do next."""
from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
import sys

from .errors import FedopsError

# `include:` in docker-compose.yml needs Compose 2.20.
MIN_COMPOSE = (2, 20)
COMPOSE_INSTALL = ("install Docker's docker-compose-plugin package (Debian/Ubuntu: apt-get install "
                   "docker-compose-plugin from Docker's repository, or Docker Desktop); "
                   "Compose v1 (`docker-compose`) is not supported")


def compose_version(text: str) -> tuple[int, int] | None:
    """'2.26.1-4' or 'v2.29.7' -> (2, 26); None when it is not a version."""
    match = re.match(r"^v?(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_compose_version(text: str) -> None:
    version = compose_version(text)
    if version is None or version < MIN_COMPOSE:
        raise FedopsError(f"Docker Compose {text.strip() or '(unknown version)'} is too old: the compose files "
                          f"need {MIN_COMPOSE[0]}.{MIN_COMPOSE[1]} or newer (`include:`)", COMPOSE_INSTALL)


def docker_engine() -> None:
    if not shutil.which("docker"):
        raise FedopsError("the docker command is not installed",
                          "install Docker Engine >= 20.10 with the Compose v2 plugin")
    from . import engine
    engine.ping()
    proc = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FedopsError("Docker Compose v2 (`docker compose`) is not installed", COMPOSE_INSTALL)
    check_compose_version(proc.stdout)


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
