"""A user's notebook workspace (their home volume), for the persistence and backup
tests: their server started through the hub as a signed-in user, files written inside
it, and read back from the volume itself (a throwaway container, no server needed)."""
from __future__ import annotations

import shlex
import subprocess

from fedops import compose, engine
from test_notebooks import docker_exec, hub_login, notebook_container, start_server


def volume(username: str) -> str:
    return f"{engine.notebook_prefix(compose.project_name())}-home-{username}"


def start(stack, username: str) -> str:
    """Sign in at the hub, start the user's server (if it is not running); its container."""
    http, answer = hub_login(stack, username)
    try:
        assert answer.status_code == 302, answer.text[:300]
        start_server(stack, http, username)
    finally:
        http.close()
    return notebook_container(stack, username)


def write(stack, username: str, name: str, text: str) -> None:
    """~/work/<name> in the user's server, written as the user."""
    container = start(stack, username)
    done = docker_exec(container, "sh", "-c", f"printf %s {shlex.quote(text)} > ~/work/{shlex.quote(name)}")
    assert done.returncode == 0, done.stderr


def read(username: str, name: str) -> tuple[int, str]:
    """(owner uid, text) of ~/work/<name> in the user's home volume; (-1, "") if missing."""
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{volume(username)}:/home/jovyan:ro",
         compose.setting("BASE_IMAGE", "debian:trixie-slim"), "sh", "-c",
         f'f=/home/jovyan/work/{shlex.quote(name)}; [ -f "$f" ] || exit 3; stat -c %u "$f"; cat "$f"'],
        capture_output=True, text=True, timeout=120)
    if proc.returncode == 3:
        return -1, ""
    assert proc.returncode == 0, proc.stderr
    uid, _, text = proc.stdout.partition("\n")
    return int(uid), text
