"""/etc/hosts lines for the public hostnames, in a marked block (task list 2.2)."""
from __future__ import annotations

import re
from pathlib import Path

from .config import Federation
from .services import hostnames


def names(fed: Federation) -> list[str]:
    return list(hostnames(fed).values())


def block(fed: Federation, project: str, address: str = "127.0.0.1") -> str:
    return (f"# BEGIN {project} (managed by `invoke hosts`)\n"
            f"{address} {' '.join(names(fed))}\n"
            f"# END {project}\n")


def _strip(text: str, project: str) -> str:
    pattern = re.compile(rf"^# BEGIN {re.escape(project)} .*?^# END {re.escape(project)}\n?",
                         re.S | re.M)
    return pattern.sub("", text)


def install(path: Path, fed: Federation, project: str, address: str = "127.0.0.1") -> bool:
    """Write (or replace) the block; returns True when the file changed."""
    old = path.read_text() if path.exists() else ""
    base = _strip(old, project)
    if base and not base.endswith("\n"):
        base += "\n"
    new = base + block(fed, project, address)
    if new == old:
        return False
    path.write_text(new)
    return True


def remove(path: Path, project: str) -> bool:
    old = path.read_text() if path.exists() else ""
    new = _strip(old, project)
    if new == old:
        return False
    path.write_text(new)
    return True
