"""`invoke bench` end to end: stack against bare Flower, memory, capacity, bring-up;
writes docs/benchmarks.md."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import httpx

from .. import compose, config, paths
from ..errors import FedopsError
from . import bringup, footprint, notebooks, rounds
from .bare import BareFederation
from .capacity import BENCH_LABEL, capacity_wave, probe_capacity
from .common import log
from .machine import machine_info, total_memory
from .memory import MemorySampler, container_processes, merge_peaks
from .report import (REPORT, Result, Timing, TARGET_RATIO, capacity_summary, fmt, mark_partial, render_bringup, render_capacity,
                     render_memory, render_pairs, render_report, render_round_breakdown, render_supernode_cost,
                     splice)
from .stackrun import check_stack, time_stack


# Parts `--only` re-measures, each its own section of the report; the rest of the
# report is kept as the last full run wrote it.
PARTS = ("pairs", "monitoring", "notebooks", "bringup", "rounds", "capacity")
DEFAULT_ROUNDS = 3
DEFAULT_REPEAT = 2


def run_parts(parts: tuple[str, ...], report: Path = REPORT, max_supernodes: int = 120) -> Result:
    """Measure only `parts` and put their sections into the existing report."""
    import docker

    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise FedopsError(f"--only: unknown part(s) {', '.join(unknown) or '(none)'}",
                          f"choose from {', '.join(PARTS)}, comma-separated")
    if not report.exists():
        raise FedopsError(f"{report} does not exist: --only updates a report", "run invoke bench once first")
    fed = config.load()
    client, project = docker.from_env(), compose.project_name()
    check_stack(fed)
    result = Result(datetime.now(timezone.utc), 0, 0, 0, machine_info())
    text = report.read_text()
    stamp = f"(measured {result.started:%Y-%m-%d %H:%M} UTC by `invoke bench --only {','.join(parts)}`)"
    if "monitoring" in parts:
        log("monitoring: the stack's memory by phase, Prometheus' series, samples and TSDB")
        result.footprint = footprint.measure(client, project)
        text = splice(text, footprint.render(result.footprint) + ["", stamp])
    if "notebooks" in parts:
        result.notebooks = notebooks.measure(fed, client, project)
        text = splice(text, notebooks.render(result.notebooks) + ["", stamp])
    if "pairs" in parts:
        online = check_stack(fed)
        partitions = [fed.organisation(o).partition_id for o in online]
        BareFederation(partitions, len(fed.organisations)).preflight()
        result.rounds, result.repeat, result.supernodes = DEFAULT_ROUNDS, DEFAULT_REPEAT, len(online)
        measure_pairs(client, project, fed, online, result)
        log(f"ratio stack/bare (medians): {fmt(result.ratio, '.2f')}x (target <= {TARGET_RATIO}x)")
        notes = [""] + [f"Note: {n}." for n in result.notes] if result.notes else []
        for section in (render_pairs(result) + notes, render_memory(result), render_supernode_cost(result),
                        rounds.render(result.round_profile)):
            text = splice(text, section + ["", stamp])
    if "capacity" in parts:
        result.max_supernodes, result.capacity_wave = max_supernodes, capacity_wave()
        measure_capacity(client, project, fed, len(check_stack(fed)), result)
        text = splice(text, render_capacity(result) + ["", stamp])
    if "rounds" in parts:
        log(f"rounds: one stack run of {DEFAULT_ROUNDS} rounds, profiled from the SuperNodes' logs")
        t = time_stack(DEFAULT_ROUNDS, org_names=[o.name for o in fed.organisations])
        result.round_profile = profile_run(client, project, t) if t.completed else None
        if not t.completed:
            log(f"  the run did not complete ({t.status}): nothing measured")
        text = splice(text, rounds.render(result.round_profile) + ["", stamp])
    if "bringup" in parts:        # with the cold build: its ratio is measured in one run
        result.bringup = bringup.measure(cold_build=True)
        text = splice(text, render_bringup(result.bringup) + ["", stamp])
    if {"pairs", "rounds"} & set(parts):    # the written half beside the round profile: no stamp
        text = splice(text, render_round_breakdown())
    report.write_text(mark_partial(text))
    log(f"updated {', '.join(parts)} in {report.relative_to(paths.ROOT) if report.is_relative_to(paths.ROOT) else report}")
    return result


def run(rounds: int = DEFAULT_ROUNDS, repeat: int = DEFAULT_REPEAT, max_supernodes: int = 120, skip_capacity: bool = False,
        skip_bringup: bool = False, skip_cold_build: bool = False, report: Path = REPORT) -> Result:
    import docker

    if rounds < 1 or repeat < 1:
        raise FedopsError("--rounds and --repeat must be at least 1", "e.g. invoke bench --rounds 3 --repeat 2")
    fed = config.load()
    orgs = [o.name for o in fed.organisations]
    log(f"checking the stack ({len(orgs)} organisations' SuperNodes expected online)")
    online = check_stack(fed)
    n = len(online)
    partitions = [fed.organisation(o).partition_id for o in online]
    BareFederation(partitions, len(orgs)).preflight()
    client = docker.from_env()
    project = compose.project_name()
    result = Result(datetime.now(timezone.utc), rounds, repeat, n, machine_info(), max_supernodes=max_supernodes,
                    capacity_wave=capacity_wave())
    if n < len(orgs):
        result.notes.append(f"only {n} of the {len(orgs)} organisations' SuperNodes were online on the "
                            f"stack ({', '.join(online)}), so both modes ran with {n} SuperNodes "
                            f"(partitions {', '.join(map(str, partitions))} of {len(orgs)})")
        log(f"  only {n} of {len(orgs)} organisations' SuperNodes online: both modes use {n}")

    measure_pairs(client, project, fed, online, result)
    q = result.ratio
    log(f"ratio stack/bare (medians): {fmt(q, '.2f')}x (target <= {TARGET_RATIO}x)")

    if skip_capacity:
        result.capacity_note = "skipped (--skip-capacity)"
    else:
        measure_capacity(client, project, fed, n, result)

    log("monitoring: the stack's memory by phase, Prometheus' series, samples and TSDB")
    result.footprint = footprint.measure(client, project)
    try:
        result.notebooks = notebooks.measure(fed, client, project)
    except (FedopsError, OSError, httpx.HTTPError) as exc:
        result.notes.append(f"notebook servers not measured: {getattr(exc, 'problem', exc)}")
        log(f"notebooks not measured: {exc}")

    if not skip_bringup:
        result.bringup = bringup.measure(cold_build=not skip_cold_build)

    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(result))
    log(f"wrote {report.relative_to(paths.ROOT) if report.is_relative_to(paths.ROOT) else report}")
    return result


def measure_pairs(client, project: str, fed, online: list[str], result: Result) -> None:
    """Stack and bare runs in turn (result.rounds rounds, result.repeat clean pairs
    wanted), the containers' peak memory during the stack's, the round profile of a
    clean stack run and a SuperNode's processes afterwards; notes on disturbed runs."""
    orgs = [o.name for o in fed.organisations]
    n, rounds, repeat = len(online), result.rounds, result.repeat
    partitions = [fed.organisation(o).partition_id for o in online]
    log(f"starting bare Flower: 1 SuperLink, {n} SuperNodes (insecure, host processes)")
    with BareFederation(partitions, len(orgs)) as bare, MemorySampler(client, project) as sampler:
        log(f"  bare SuperLink on 127.0.0.1:{bare.port}, {n} SuperNodes online")
        for i in range(1, 2 * repeat + 1):
            if i > repeat and all(len(result.clean(m)) >= repeat for m in ("stack", "bare")):
                break
            what = f"pair {i}/{repeat}" if i <= repeat else f"extra pair {i - repeat} (a run was disturbed)"
            log(f"{what}: stack, {rounds} round(s)")
            sampler.reset()
            t = time_stack(rounds, org_names=orgs)
            merge_peaks(result.memory, sampler.peaks())
            result.timings.append(t)
            if t.clean:
                result.round_profile = profile_run(client, project, t) or result.round_profile
            log(f"  stack: {t.status} in {t.wall:.1f} s ({t.failures} node failures)")
            log(f"{what}: bare, {rounds} round(s)")
            b = bare.time_run(rounds)
            result.timings.append(b)
            log(f"  bare: {b.status} in {b.wall:.1f} s ({b.failures} node failures)")
    failed = [t for t in result.timings if not t.completed]
    if failed:
        result.notes.append("runs that did not complete are left out of the medians: "
                            + ", ".join(f"{t.mode} {t.run_id} ({t.status})" for t in failed))
    for mode in ("stack", "bare"):
        if not result.clean(mode) and any(t.mode == mode and t.completed for t in result.timings):
            result.notes.append(f"no {mode} run was free of node failures: its median includes disturbed runs")
    result.supernode_processes = idle_supernode_processes(client, project, online[0]) if online else []


def measure_capacity(client, project: str, fed, base: int, result: Result) -> None:
    """The capacity probe from `base` SuperNodes up to result.max_supernodes, into
    result.capacity; why it stopped (or failed) into result.capacity_note."""
    with MemorySampler(client, project, services=("supernode-",), extra_label=f"{BENCH_LABEL}=1") as sampler:
        try:
            why = probe_capacity(client, project, fed, base, result.max_supernodes, sampler, result.capacity,
                                 total_memory())
            result.capacity_note = f"the probe stopped because {why}"
        except FedopsError as exc:
            result.capacity_note = f"the probe failed: {exc.problem}"
            log(f"capacity probe failed: {exc}")
    if result.capacity:
        log(f"capacity: {capacity_summary(result.capacity, result.max_supernodes)}")


def profile_run(client, project: str, t: Timing):
    """Where the time of a completed stack run went, from its SuperNodes' logs."""
    return rounds.measure(client, project, t.run_id, t.started, t.started + t.wall, t.rounds)


def idle_supernode_processes(client, project: str, org: str) -> list[dict]:
    """The processes of an organisation's SuperNode container between runs."""
    found = client.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                      f"com.docker.compose.service=supernode-{org}"]})
    return container_processes(found[0]) if found else []
