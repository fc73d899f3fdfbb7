"""Helpers the stack tests import by name (conftest is not importable by name when
several test folders each have one)."""
from __future__ import annotations

import os
from pathlib import Path

from fedops import config

LOOPBACK = Path(__file__).resolve().parent / "loopback"


def loopback_env(fed: config.Federation) -> dict[str, str]:
    """Environment for subprocesses (the flwr CLI) that must resolve the public names."""
    return {**os.environ, "FL_TEST_DOMAIN": fed.domain,
            "PYTHONPATH": os.pathsep.join([str(LOOPBACK), os.environ.get("PYTHONPATH", "")])}
