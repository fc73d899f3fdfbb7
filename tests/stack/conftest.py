"""The stack, brought up once per session the way a user does (`./invoke up`), then
tested from outside: through 127.0.0.1 and the published ports, with the project CA."""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedops import compose, config, paths

from stackenv import LOOPBACK

pytestmark = pytest.mark.stack


@dataclass
class Stack:
    fed: config.Federation
    ca: Path

    def secret(self, name: str) -> str:
        return (paths.SECRETS_DIR / name).read_text().strip()

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*compose.argv(), *args], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def exec(self, service: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *shlex.split(cmd), check=check)

    def logs(self, service: str, since: str = "") -> str:
        args = ["logs", "--no-color"] + (["--since", since] if since else []) + [service]
        return self.compose(*args).stdout

    def setting(self, name: str) -> str:
        return compose.settings()[name]

    def invoke(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(paths.ROOT / "invoke"), *args], capture_output=True, text=True,
                              check=check, input=input, cwd=paths.ROOT)


@pytest.fixture(scope="session")
def stack() -> Stack:
    """`./invoke up` (idempotent: a running stack is checked and kept)."""
    proc = subprocess.run([str(paths.ROOT / "invoke"), "up"], cwd=paths.ROOT)
    if proc.returncode != 0:
        pytest.fail("`./invoke up` failed: see its output above", pytrace=False)
    fed = config.load()
    os.environ["FL_TEST_DOMAIN"] = fed.domain
    import importlib.util
    spec = importlib.util.spec_from_file_location("fl_loopback", LOOPBACK / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))   # this process too
    return Stack(fed, paths.PKI_DIR / "ca.crt")
