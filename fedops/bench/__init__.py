"""`invoke bench`: the full stack against bare Flower processes, peak memory, capacity,
bring-up and rebuild times, the stack's memory at rest and Prometheus' cost, notebook
servers' start times. One module per part (report, machine, memory, bare, stackrun,
capacity, bringup, footprint, notebooks; main runs them; `--only` re-measures
footprint or notebooks and splices their sections into the existing report).

Three measurements, written to docs/benchmarks.md (regenerated whole on every run):

1. Wall time of the same app (apps/digits), rounds and SuperNode count two ways,
   alternately when repeated: the full stack the way users run it (`invoke fl.run`:
   `federation.submit` + `federation.follow`: containers, TLS, the edge, the sites'
   mTLS, SuperNode authentication) and bare flwr processes on the host (insecure, no
   containers). Both are timed from submission to the `finished:completed` status the
   SuperLink reports. Ratio = stack / bare; the target is at most TARGET_RATIO.
2. Peak memory of the stack's containers during its runs (docker stats, ~1 s samples).
3. Capacity: extra SuperNode containers (label fl.bench=1) join the existing sites'
   network namespaces with fresh registered keys; the total is stepped up and a
   one-round run waits for all of them (run config min-nodes), until a round fails
   or the cap. Afterwards the containers are removed and their keys unregistered.
4. Bring-up and rebuilds on a throwaway deployment (bringup.py).
5. The stack's memory at rest by phase, Prometheus' series, samples and TSDB
   (footprint.py); sign-in to a running notebook server and 20 users starting at once
   (notebooks.py, with throwaway realm users).

The stack is shared: nothing here starts, stops or recreates a Compose service.
Pure helpers (command lines, parsing, the report) come first and are unit-tested.
"""
from .main import run, run_parts
from .report import REPORT, TARGET_RATIO

__all__ = ["run", "run_parts", "REPORT", "TARGET_RATIO"]
