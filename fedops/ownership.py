"""Giving files to a container user's uid, as root or through a throwaway container.

Keys are mounted read-only and must be readable by the service's own uid only. Root can
chown directly; a user in the docker group does it through the engine (which is root).
"""
from __future__ import annotations

import os
from pathlib import Path


def give(path: Path, uid: int, mode: int = 0o400) -> None:
    path = path.resolve()
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
        os.chmod(path, mode)
        return
    from . import compose, engine
    engine.run_helper(compose.setting("BASE_IMAGE", "debian:trixie-slim"),
                      ["sh", "-c", f"chown {uid}:{uid} /w/{path.name} && chmod {mode:o} /w/{path.name}"],
                      volumes={str(path.parent): {"bind": "/w", "mode": "rw"}})
