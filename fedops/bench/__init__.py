"""`invoke bench`: the full stack against bare Flower processes, peak memory, capacity,
bring-up and rebuild times. One module per part (report, machine, memory, bare,
stackrun, capacity, bringup; main runs them).

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

The stack is shared: nothing here starts, stops or recreates a Compose service.
Pure helpers (command lines, parsing, the report) come first and are unit-tested.
"""
from .main import run
from .report import REPORT, TARGET_RATIO

__all__ = ["run", "REPORT", "TARGET_RATIO"]
