"""The stack tests' own deployment, brought up once per session the way a user does
(`./invoke up`) and torn down at the end, then tested from outside: through 127.0.0.1
and its published ports, with its project CA.

It is a guest on the machine: its instance folder (tests/support/testinstance.py) is
outside the checkout and has its own Compose project, CA, secrets, configuration, ports
and subnets. The operator's deployment (this checkout's instance and its Compose
project) is only read, before and after, by test_operator_untouched.py.
FL_TEST_KEEP=1 keeps the test deployment afterwards (for debugging)."""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import testinstance
from fedops import compose, config, paths

from stackenv import LOOPBACK

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Every test in this folder is marked `stack` (so `-m "not stack"` runs the unit
    tests alone, without a Docker engine); tests marked `last` run after every other
    test of the session (the check that the suite left the operator's deployment alone)."""
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.stack)
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@dataclass
class Stack:
    fed: config.Federation
    ca: Path
    instance: Path
    operator_before: dict

    def secret(self, name: str) -> str:
        return (paths.SECRETS_DIR / name).read_text().strip()

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = compose.call(*args, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker compose {shlex.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc

    def exec(self, service: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *shlex.split(cmd), check=check)

    def logs(self, service: str, since: str = "") -> str:
        args = ["logs", "--no-color"] + (["--since", since] if since else []) + [service]
        return self.compose(*args).stdout

    def setting(self, name: str) -> str:
        return compose.settings()[name]

    def rendered(self) -> dict:
        """build/federation.json as the tasks rendered it for the containers."""
        import json
        return json.loads((paths.BUILD_DIR / "federation.json").read_text())

    def url(self, name: str) -> str:
        """A public host's URL (the published HTTPS port in it unless 443)."""
        return self.rendered()["urls"][name]

    def hostname(self, name: str) -> str:
        return self.rendered()["hostnames"][name]

    def invoke(self, *args: str, check: bool = True, input: str | None = None,
               timeout: float = 1800) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(paths.ROOT / "invoke"), *args], capture_output=True, text=True,
                              input=input, cwd=paths.ROOT, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"./invoke {shlex.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


def enter(instance: Path) -> None:
    """This process and every task it runs use the test instance, and nothing of the
    calling shell's deployment settings."""
    for key in list(os.environ):
        if key.startswith(compose.ENV_PREFIXES):
            del os.environ[key]
    os.environ[paths.INSTANCE_ENV] = str(instance)


@pytest.fixture(scope="session")
def stack() -> Stack:
    keep = os.environ.get("FL_TEST_KEEP") == "1"
    before = testinstance.operator_snapshot()
    print(f"\noperator's deployment (project {before['project']}): {len(before['containers'])} containers, "
          f"{len(before['volumes'])} volumes, {len(before['files'])} files in its instance: left alone")
    machine = compose.settings()            # the operator's view: how images build here
    removed = testinstance.remove_stale_projects()
    if removed:
        print(f"\nremoved test deployments left by interrupted sessions: {', '.join(removed)}")
    # FL_TEST_INSTANCE=<dir>: a deployment kept by FL_TEST_KEEP=1, brought up to date
    # and tested again (and kept): quick iterations while debugging.
    reuse = os.environ.get("FL_TEST_INSTANCE", "")
    keep = keep or bool(reuse)
    instance = Path(reuse) if reuse else testinstance.create(machine)
    enter(instance)
    print(f"\ntest deployment: project {compose.project_name()}, instance {instance}, "
          f"https://{testinstance.DOMAIN}:{compose.setting('FL_HTTPS_PORT')}/")
    try:
        proc = subprocess.run([str(paths.ROOT / "invoke"), "up"], cwd=paths.ROOT)
        if proc.returncode != 0:
            pytest.fail("`./invoke up` of the test deployment failed: see its output above", pytrace=False)
        fed = config.load()
        os.environ["FL_TEST_DOMAIN"] = fed.domain
        spec = importlib.util.spec_from_file_location("fl_loopback", LOOPBACK / "sitecustomize.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))   # this process too
        yield Stack(fed, paths.PKI_DIR / "ca.crt", instance, before)
    finally:
        if not keep:
            subprocess.run([str(paths.ROOT / "invoke"), "down", "--volumes", "--yes"], cwd=paths.ROOT,
                           capture_output=True)
            testinstance.destroy(instance)
        else:
            print(f"\nFL_TEST_KEEP=1: the test deployment stays (FL_INSTANCE_DIR={instance})")
    # The teardown too must leave the operator's deployment alone.
    changed = testinstance.differences(before, testinstance.operator_snapshot())
    assert not changed, "the test session changed the operator's deployment:\n  " + "\n  ".join(changed)
