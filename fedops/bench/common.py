"""What every part of the benchmark shares: its log line, the app, units, and a
clean-up that a second Ctrl-C cannot cut short."""
from __future__ import annotations

import signal
import statistics
import threading
from contextlib import contextmanager
from datetime import datetime

APP = "digits"


MIB = 1024 * 1024


# The capacity rounds' messages outstanding at once, per core (capacity.capacity_wave;
# the report). With the sample app's sliding window that many ClientApps start and run
# all the time; 3 per core in waves lost 5 of 48 replies past flwr's 30 s.
CLIENTAPPS_PER_CORE = 2


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", flush=True)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@contextmanager
def sigint_deferred():
    """Clean-up must not be cut short by a second Ctrl-C or a `kill` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    old = {sig: signal.signal(sig, lambda *a: received.append(a)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt
