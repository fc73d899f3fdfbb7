"""Helpers the stack tests import by name (conftest is not importable by name when
several test folders each have one)."""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from fedops import config, federation

LOOPBACK = Path(__file__).resolve().parent / "loopback"


def loopback_env(fed: config.Federation) -> dict[str, str]:
    """Environment for subprocesses (the flwr CLI) that must resolve the public names."""
    return {**os.environ, "FL_TEST_DOMAIN": fed.domain,
            "PYTHONPATH": os.pathsep.join([str(LOOPBACK), os.environ.get("PYTHONPATH", "")])}


def utc_now() -> str:
    """Now, as `docker compose logs --since` takes it."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def online_by_org() -> dict[str, str]:
    """Each registered SuperNode's status, by the organisation it was registered for."""
    return {n.name: n.status for n in federation.nodes() if n.name}


def wait_all_online(stack, timeout: float = 240) -> None:
    orgs = {o.name for o in stack.fed.organisations}
    deadline = time.time() + timeout
    while True:
        states = online_by_org()
        if all(states.get(o) == "online" for o in orgs):
            return
        if time.time() > deadline:
            raise AssertionError(f"SuperNodes not all online after {timeout:.0f}s: {states}")
        time.sleep(3)
