"""Bring-up and rebuild times, each as a ratio measured in one run, on a throwaway
deployment of its own (fedops/instances.py: own project, image tags, ports, subnets),
so the operator's stack is never taken down:

- warm `up` after `down` against the slowest dependency chain's own readiness time
  (each service's start-to-ready time from that same `up`, summed along the chain);
- `up` on the running, unchanged deployment;
- rebuild and restart after a one-line change in one service's folder against a cold
  build of every image (`--no-cache`), and which services restarted.

The one-line change is a comment appended to the service's entrypoint in this checkout
and taken out again afterwards, whatever happens."""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import bringup, compose, engine, instances, paths, stack
from .common import log

PREFIX = "flbench-"
IMAGE_TAG = "bench"
DOMAIN = "flbench.localhost"
CHANGED_SERVICE = "ctlgate"          # its folder gets the one-line change
READY_RE = re.compile(r"\] (?P<service>[\w.-]+): ready after (?P<own>[\d.]+)s \(at (?P<at>[\d.]+)s\)")
TOTAL_RE = re.compile(r"all \d+ services ready in (?P<total>[\d.]+)s")


@dataclass
class BringUp:
    warm_up: float | None = None            # s, `up` after `down`, wall
    chain: list[str] = field(default_factory=list)
    chain_own: float | None = None          # s, the slowest chain's own readiness
    unchanged_up: float | None = None       # s
    rebuild_up: float | None = None         # s, one-line change: rebuild + restart
    cold_build: float | None = None         # s, every image --no-cache
    restarted: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def warm_ratio(self) -> float | None:
        return self.warm_up / self.chain_own if self.warm_up and self.chain_own else None

    @property
    def rebuild_ratio(self) -> float | None:
        return self.rebuild_up / self.cold_build if self.rebuild_up and self.cold_build else None


def own_times(up_output: str) -> dict[str, float]:
    """{service: seconds from its start to ready} from `invoke up`'s lines."""
    return {m["service"]: float(m["own"]) for m in READY_RE.finditer(up_output)}


def slowest_chain(nodes: dict[str, bringup.Node], own: dict[str, float]) -> tuple[list[str], float]:
    """The dependency chain whose services' own readiness times add up to the most."""
    best: tuple[list[str], float] = ([], 0.0)
    for chain in bringup.chains(nodes).values():
        total = sum(own.get(s, 0.0) for s in chain)
        if total > best[1]:
            best = (chain, total)
    return best


def one_line_change(service: str) -> Path:
    return paths.SERVICES_DIR / service / "entrypoint.py"


class Deployment:
    """`./invoke` in a throwaway instance folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(compose.ENV_PREFIXES)}
        self.env[paths.INSTANCE_ENV] = str(folder)

    def invoke(self, *args: str) -> tuple[float, str]:
        t0 = time.monotonic()
        proc = subprocess.run([str(paths.ROOT / "invoke"), *args], cwd=paths.ROOT, env=self.env,
                              capture_output=True, text=True, timeout=3600)
        elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"./invoke {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
        return elapsed, proc.stdout

    def started_at(self) -> dict[str, str]:
        """{service: when its container last started}."""
        return {svc: c.attrs["State"]["StartedAt"]
                for svc, c in engine.project_containers(self.folder.name, all=False).items()}


def measure(cold_build: bool = True) -> BringUp:
    result = BringUp()
    folder = instances.create(compose.settings(), PREFIX, IMAGE_TAG, DOMAIN)
    deployment = Deployment(folder)
    changed = one_line_change(CHANGED_SERVICE)
    original = changed.read_text()
    try:
        log(f"bring-up: a throwaway deployment ({folder.name}); first `up` (not timed)")
        deployment.invoke("up")
        deployment.invoke("down")
        log("bring-up: `up` after `down`")
        result.warm_up, out = deployment.invoke("up")
        result.chain, result.chain_own = slowest_chain(bringup.graph(stack.model()), own_times(out))
        log(f"  {result.warm_up:.1f}s; slowest chain {' -> '.join(result.chain)}: {result.chain_own:.1f}s own")
        result.unchanged_up, _ = deployment.invoke("up")
        log(f"  unchanged `up`: {result.unchanged_up:.1f}s")
        before = deployment.started_at()
        changed.write_text(original + "# bench: a one-line change\n")
        try:
            result.rebuild_up, _ = deployment.invoke("up")
        finally:
            changed.write_text(original)
        after = deployment.started_at()
        result.restarted = sorted(s for s in after if before.get(s) != after[s])
        log(f"  one-line change in services/{CHANGED_SERVICE}: {result.rebuild_up:.1f}s, "
            f"restarted: {', '.join(result.restarted) or 'nothing'}")
        deployment.invoke("up")     # back to the unchanged image
        if cold_build:
            log("bring-up: cold build of every image (--no-cache; minutes)")
            result.cold_build, _ = deployment.invoke("images.build", "--no-cache")
            log(f"  {result.cold_build:.1f}s")
        else:
            result.note = "cold build skipped"
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result.note = f"the measurement failed: {str(exc).splitlines()[0]}"
        log(result.note)
    finally:
        changed.write_text(original)
        try:
            deployment.invoke("down", "--volumes", "--yes")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"could not remove the throwaway deployment {folder.name}: {exc}")
        instances.destroy(folder)
    return result
