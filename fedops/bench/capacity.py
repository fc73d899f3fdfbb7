"""The capacity probe: extra SuperNode containers join the sites' namespaces with
fresh registered keys, stepped up until a round fails, memory runs short or the cap;
then removed and unregistered. Only containers labelled fl.bench=1 are touched."""
from __future__ import annotations

import os
import secrets as pysecrets
import tempfile
import time
from pathlib import Path

from .. import federation, ownership, paths, runlog, secrets
from ..errors import FedopsError
from ..services import SUPERNODE_CPU_SHARES, SUPERNODE_UID
from .common import CLIENTAPPS_PER_CORE, sigint_deferred, log
from .machine import mem_available
from .memory import MemorySampler
from .report import CapacityStep
from .stackrun import online_organisations, time_stack


BENCH_LABEL = "fl.bench"            # every container this module starts: fl.bench=1


BENCH_RUN_LABEL = "fl.bench.run"    # ... and the token of the bench run that started it


CAPACITY_TIMEOUT = 900              # seconds for one capacity round (start to finish)


# The capacity rounds keep this many of a phase's messages per core outstanding (the
# sample app's run config max-parallel-nodes): every message starts a ClientApp
# process (~2 CPU-s of flwr's imports) that flwr 1.42 fails unless it starts within 30 s of
# being claimed, and a failed one is claimed and started again while the first still
# runs, so too many at once collapse rather than slow down (measured on 2 cores: 12 at
# once with 48 SuperNodes beside them gave no reply in 15 minutes).


def capacity_wave(cores: int | None = None) -> int:
    """max-parallel-nodes for the capacity rounds on a machine with `cores` cores."""
    return CLIENTAPPS_PER_CORE * max(cores if cores is not None else (os.cpu_count() or 1), 1)


ONLINE_TIMEOUT = 180                # seconds for new SuperNodes to come online


# Extra SuperNodes share a site's network namespace with its own SuperNode (9094 and
# 9098): theirs are numbered from these.
BENCH_RUNTIME_PORT = 19100


BENCH_HEALTH_PORT = 19300


def capacity_steps(start: int, cap: int, step: int) -> list[int]:
    """The SuperNode counts to try: from start, doubling each time (in multiples of
    `step`), up to cap (cap itself always the last step). A round's time grows with the
    SuperNodes in it, so doubling reaches the machine's limit in few rounds; the limit
    is then known to within a factor of two (the report gives both counts)."""
    if cap < start:
        return [start]
    unit = max(step, 1)
    steps, n = [start], start
    while n < cap:
        n = min(cap, max(n + unit, 2 * n // unit * unit))
        steps.append(n)
    return steps


# The probe stops before the machine does: when the host's available memory fell below
# this share of its total during a step, the next step is not tried.
MEMORY_RESERVE = 0.10


def memory_short(min_available: int | None, total: int | None, reserve: float = MEMORY_RESERVE) -> bool:
    return bool(min_available is not None and total and min_available < reserve * total)


def memory_text(available: int, total: int) -> str:
    gib = 1024 ** 3
    return f"{available / gib:.1f} GiB of {total / gib:.1f} GiB available"


def memory_forecast(steps: list[CapacityStep], target: int, total: int | None,
                    reserve: float = MEMORY_RESERVE) -> str | None:
    """Why `target` SuperNodes would not fit in memory, or None. The memory one more
    SuperNode takes is read from the steps so far (the fall of the host's available
    memory at its lowest, per SuperNode added, over the steps measured); the next step
    is not started when what would remain is under the reserve. (Measured on 2026-12-07
    without this check: 96 SuperNodes on 23.5 GiB left 0.2 GiB available, the kernel
    killed Keycloak and the engine stopped answering.)"""
    known = [s for s in steps if s.min_available is not None]
    if not total or len(known) < 2 or known[-1].supernodes <= known[0].supernodes:
        return None
    first, last = known[0], known[-1]
    per_node = max(first.min_available - last.min_available, 0) / (last.supernodes - first.supernodes)
    left = last.min_available - per_node * (target - last.supernodes)
    if left >= reserve * total:
        return None
    gib = 1024 ** 3
    return (f"memory would run short at {target}: {per_node / 1024 ** 2:.0f} MiB per SuperNode "
            f"as measured, {max(left, 0) / gib:.1f} GiB of {total / gib:.1f} GiB left, under the "
            f"{reserve:.0%} reserve")


class MemoryShort(Exception):
    """The host's available memory fell under the reserve while SuperNodes were added."""


def bench_container_spec(index: int, token: str, image: str, site_container_id: str, key_path: Path,
                         ca_path: Path, partition_id: int, num_partitions: int) -> dict:
    """docker SDK `containers.run` arguments of one extra SuperNode: the sites' image,
    user and limits (compose.organisations.yml.j2), in a site proxy's network namespace."""
    return dict(
        image=image,
        name=f"flfed-bench-{token}-supernode-{index}",
        detach=True,
        user=f"{SUPERNODE_UID}:{SUPERNODE_UID}",
        init=True,
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode=f"container:{site_container_id}",
        environment={
            "SUPERLINK_ADDRESS": "127.0.0.1:9443",
            "PARTITION_ID": str(partition_id),
            "NUM_PARTITIONS": str(num_partitions),
            "SUPERNODE_RUNTIME_PORT": str(BENCH_RUNTIME_PORT + index),
            "SUPERNODE_HEALTH_ADDRESS": f"127.0.0.1:{BENCH_HEALTH_PORT + index}",
        },
        volumes={str(key_path): {"bind": "/etc/fl/site/supernode_key", "mode": "ro"},
                 str(ca_path): {"bind": "/etc/fl/tls/ca.crt", "mode": "ro"}},
        tmpfs={"/tmp": f"uid={SUPERNODE_UID},gid={SUPERNODE_UID},mode=0700,size=512m"},
        mem_limit="1g",
        cpu_shares=SUPERNODE_CPU_SHARES,
        labels={BENCH_LABEL: "1", BENCH_RUN_LABEL: token},
        # like the sites' `restart: unless-stopped`, but bounded: an unregistered or
        # unreachable SuperNode exits, and a SuperLink restart must not end the probe
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
    )


class BenchNodes:
    """Extra SuperNode containers for the capacity probe. Everything it creates (keys,
    registrations, containers) is undone by close(), also on errors and Ctrl-C."""

    def __init__(self, client, project: str, fed):
        self.client, self.project, self.fed = client, project, fed
        self.token = pysecrets.token_hex(3)
        self.tmp = tempfile.TemporaryDirectory(prefix="fedops-bench-keys-")
        os.chmod(self.tmp.name, 0o700)
        self.node_ids: list[str] = []
        self.containers: list = []
        self.sites = self._sites()
        self.image = self._image()

    def _sites(self) -> list[tuple[str, str]]:
        """(organisation, its running site proxy's container id)."""
        out = []
        for org in self.fed.organisations:
            found = self.client.containers.list(filters={
                "label": [f"com.docker.compose.project={self.project}",
                          f"com.docker.compose.service=siteproxy-{org.name}"]})
            if found:
                out.append((org.name, found[0].id))
        if not out:
            raise FedopsError("no running site proxy (siteproxy-<org>) to attach extra SuperNodes to",
                              "`invoke status`; start the stack with `invoke up`")
        return out

    def _image(self) -> str:
        found = self.client.containers.list(filters={
            "label": [f"com.docker.compose.project={self.project}",
                      f"com.docker.compose.service=supernode-{self.sites[0][0]}"]})
        if not found:
            raise FedopsError(f"supernode-{self.sites[0][0]} is not running", "`invoke up` starts it")
        return found[0].attrs["Config"]["Image"]

    @property
    def label_filter(self) -> str:
        return f"{BENCH_RUN_LABEL}={self.token}"

    def add(self, count: int, total_memory: int | None = None, available=mem_available) -> None:
        """Register and start `count` more SuperNodes (round-robin over the sites).
        Raises MemoryShort, before the next one, when the host's available memory is
        under MEMORY_RESERVE of `total_memory` (the forecast from earlier steps is an
        estimate; this is the machine's own word)."""
        num = len(self.fed.organisations)
        for started in range(count):
            now = available()
            if memory_short(now, total_memory):
                raise MemoryShort(f"memory ran short while starting SuperNodes: {memory_text(now, total_memory)} "
                                  f"after {started} of {count}")
            index = len(self.containers)
            org, site_id = self.sites[index % len(self.sites)]
            name = f"bench-{self.token}-{index}"
            private, public = secrets.new_supernode_key(name)
            key_path = Path(self.tmp.name) / f"supernode-{index}.key"
            key_path.write_bytes(private)
            ownership.give(key_path, SUPERNODE_UID, 0o400)
            state, node_id = federation.register_key(public, name)
            if state != "registered" or not node_id:
                raise FedopsError(f"registering the bench SuperNode {name} gave {state}",
                                  "see `invoke logs --service superlink`")
            self.node_ids.append(node_id)
            spec = bench_container_spec(index, self.token, self.image, site_id, key_path,
                                        paths.DEPLOY_DIR / f"org-{org}" / "ca.crt", index % num, num)
            self.containers.append(self.client.containers.run(**spec))

    def wait_online(self, timeout: float = ONLINE_TIMEOUT) -> bool:
        deadline = time.time() + timeout
        while True:
            online = {str(n.node_id) for n in federation.nodes() if n.status == "online"}
            missing = [n for n in self.node_ids if n not in online]
            if not missing:
                return True
            stopped = self.stopped()
            if stopped or time.time() > deadline:
                for ctr in stopped:
                    tail = runlog.strip_ansi(ctr.logs(tail=4).decode(errors="replace")).strip().replace("\n", " | ")
                    log(f"  bench SuperNode {ctr.name} stopped: {tail[-400:]}")
                if not stopped:
                    log(f"  {len(missing)} bench SuperNode(s) not online after {timeout:.0f} s")
                return False
            time.sleep(3)

    def stopped(self) -> list:
        """Our containers that have stopped for good (their restart policy gave up)."""
        out = []
        for ctr in self.containers:
            try:
                ctr.reload()
            except Exception:  # noqa: BLE001 - removed behind our back
                continue
            if ctr.status in ("exited", "dead"):
                out.append(ctr)
        return out

    def restart_stopped(self) -> int:
        stopped = self.stopped()
        for ctr in stopped:
            ctr.start()
        return len(stopped)

    def close(self) -> list[str]:
        """Remove our containers, unregister our keys, delete the keys; returns problems."""
        problems = []
        for ctr in self.client.containers.list(all=True, filters={"label": self.label_filter}):
            try:
                ctr.remove(force=True)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"removing {ctr.name}: {exc}")
        for node_id in self.node_ids:
            try:
                federation.unregister(node_id)
            except FedopsError as exc:
                problems.append(f"unregistering node {node_id}: {exc.problem}")
        self.containers, self.node_ids = [], []
        self.tmp.cleanup()
        return problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with sigint_deferred():
            n = len(self.containers)
            problems = self.close()
        if n:
            log(f"capacity: removed {n} bench SuperNode container(s) and unregistered their keys")
        for p in problems:
            log(f"  clean-up problem: {p} (remove by hand: docker rm -f $(docker ps -aq --filter label={self.label_filter}))")


def probe_capacity(client, project: str, fed, base: int, cap: int, sampler: MemorySampler,
                   results: list[CapacityStep], total_memory: int | None = None) -> str:
    """Step the SuperNode count up from `base` (the organisations' online) in steps of
    the organisations' count; appends a CapacityStep per step (kept on errors). A step
    that fails is tried once more (the stack is shared: a restarted SuperLink or site is
    no capacity limit). Stops at a failed round, when memory runs short (MEMORY_RESERVE)
    or at the cap; returns which."""
    orgs = [o.name for o in fed.organisations]
    with BenchNodes(client, project, fed) as extra:
        for target in capacity_steps(base, cap, len(orgs)):
            need = target - base - len(extra.containers)
            short = memory_forecast(results, target, total_memory)
            if short:
                log(f"capacity: not trying {target} SuperNodes: {short}")
                return short
            log(f"capacity: {target} SuperNodes ({base} organisations' + {target - base} bench)")
            if need > 0:
                try:
                    extra.add(need, total_memory)
                except MemoryShort as exc:
                    log(f"  {exc}")
                    results.append(CapacityStep(target, None, str(exc), 0, _peak_supernode(sampler),
                                                sampler.min_available()))
                    return str(exc)
            for attempt in (1, 2):
                sampler.reset()
                step = _capacity_step(extra, orgs, sampler)
                low = memory_short(step.min_available, total_memory)
                # a round past CAPACITY_TIMEOUT, or with memory short, is the machine's
                # limit, not a disturbance
                if step.clean or attempt == 2 or step.status.startswith("timed out") or low:
                    break
                log(f"  {step.status}: trying this step once more")
                extra.restart_stopped()
            if attempt == 2:
                step.status += " (2nd try)"
            results.append(step)
            short = (f"memory ran short: {memory_text(step.min_available, total_memory)} at the lowest"
                     if low else "")
            if not step.clean:
                return ("a round failed" if not step.completed else
                        f"{step.failures} SuperNodes' replies failed in the round") + (f" ({short})" if short else "")
            if short:
                return short
        return "the cap was reached"


def _capacity_step(extra: BenchNodes, orgs: list[str], sampler: MemorySampler) -> CapacityStep:
    """Wait for the bench SuperNodes, then one round that waits for every SuperNode
    online (the organisations' that are online now plus ours)."""
    t0 = time.monotonic()
    if extra.node_ids:
        if not extra.wait_online():
            total = len(online_organisations(federation.nodes(), orgs)) + len(extra.node_ids)
            return CapacityStep(total, None, "SuperNodes did not come online", 0,
                                _peak_supernode(sampler), sampler.min_available())
        log(f"  all {len(extra.node_ids)} bench SuperNodes online after {time.monotonic() - t0:.0f} s")
    total = len(online_organisations(federation.nodes(), orgs)) + len(extra.node_ids)
    timing = time_stack(1, {"min-nodes": total, "max-parallel-nodes": capacity_wave()},
                        timeout=CAPACITY_TIMEOUT, label=f"n={total}",
                        org_names=orgs)
    status = timing.status if timing.status.startswith("finished") else f"timed out ({timing.status})"
    log(f"  n={total}: {status} in {timing.wall:.1f} s ({timing.failures} node failures)")
    return CapacityStep(total, timing.wall, status, timing.failures, _peak_supernode(sampler),
                        sampler.min_available())


def _peak_supernode(sampler: MemorySampler) -> int | None:
    peaks = [v["peak"] for v in sampler.peaks().values()
             if v["service"].startswith("supernode-") or v["service"].startswith("flfed-bench-")]
    return max(peaks) if peaks else None
