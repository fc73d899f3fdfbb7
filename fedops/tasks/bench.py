"""`invoke bench`: the full stack against bare Flower processes (docs/benchmarks.md)."""
import signal

from invoke import Exit, task

from . import clear_errors


@task(name="bench", help={
    "rounds": "federated rounds per timed run, the same both ways (default 3)",
    "repeat": "timed runs per mode, alternating stack and bare; medians are reported (default 2)",
    "max_supernodes": "cap of the capacity probe (default 120); it stops earlier when a round "
                      "fails or the host's available memory falls below 10%",
    "skip_capacity": "skip the capacity probe (no extra SuperNode containers are started)",
    "skip_bringup": "skip the bring-up and rebuild timings (no throwaway deployment)",
    "skip_cold_build": "time bring-up, but not the cold build of every image (--no-cache takes minutes)",
    "only": "re-measure only these parts, comma-separated (pairs, monitoring, notebooks, bringup, rounds, capacity), and update their "
            "sections of docs/benchmarks.md, keeping the rest"})
@clear_errors
def bench(c, rounds=3, repeat=2, max_supernodes=120, skip_capacity=False, skip_bringup=False,
          skip_cold_build=False, only=""):
    """Benchmark the full stack against bare Flower; writes docs/benchmarks.md.

    Times the same app, rounds and SuperNode count on the running stack and on bare flwr
    processes (insecure, no containers), records the containers' peak memory and how
    many SuperNodes still complete a round, then times bring-up and rebuilds on a
    throwaway deployment of its own. Needs the running stack (`invoke up`); it only adds
    and removes its own containers (label fl.bench=1) and deployment (flbench-*), and its
    own throwaway notebook users (benchnbNN) with their servers and volumes."""
    from .. import bench as bench_   # here, not at the top: every task would pay for its imports (httpx)
    # `kill` (SIGTERM) cleans up like Ctrl-C: bench containers removed, keys unregistered,
    # throwaway users deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    if only:
        bench_.run_parts(tuple(p.strip() for p in only.split(",") if p.strip()), max_supernodes=int(max_supernodes))
        return
    result = bench_.run(rounds=int(rounds), repeat=int(repeat), max_supernodes=int(max_supernodes),
                        skip_capacity=skip_capacity, skip_bringup=skip_bringup,
                        skip_cold_build=skip_cold_build)
    q = result.ratio
    if q is None:
        raise Exit("no ratio: a stack or bare run did not complete (see docs/benchmarks.md)", code=1)
    print(f"\nstack/bare: {q:.2f}x (target <= {bench_.TARGET_RATIO:.2f}x: "
          f"{'met' if q <= bench_.TARGET_RATIO else 'NOT met'}); report: docs/benchmarks.md")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
