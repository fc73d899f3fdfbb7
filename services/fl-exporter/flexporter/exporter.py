"""The federation as Prometheus metrics, read through the edge's control.<domain> like any
client: a Keycloak service account (client credentials, realm role superlink_viewer)
whose token ctlgate admits to the Control API's read-only methods only.

On every scrape: ListRuns and ListNodes (POST /v1/control/<method>, protobuf), turned
into metric families by the pure function `families`. A failed call is counted in
fl_exporter_errors_total{stage} and the scrape serves what it has (no FL series).

Rounds and per-round metrics come from each run's log (StreamLogs, the method behind
`flwr log --stream`), parsed by flexporter.runlog: one background thread per run
followed, which resumes after the last log entry it has (the stream's
latest_timestamp), so no log is read twice. Followed: the runs under way and the
`keep_runs` most recently submitted ones, whose series are the only per-run series
served (bounded cardinality); a run's log is read to its end once and kept.

The CRL the edge checks organisations against (`crl_file`, the same file `invoke
ca.revoke` and `invoke up` deploy to every service) is read on every scrape: its
next update as a metric, for the CRLExpiringSoon alert.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import runlog

log = logging.getLogger("flexporter")
PROTOBUF = "application/protobuf"
PROTOBUF_STREAM = "application/flower-protobuf-stream"   # flwr/supercore/protobuf/constants.py
FRAME_HEADER = 4            # a stream frame: 4-byte big-endian length, then the message
MAX_FRAME = 64 * 1024 * 1024
STAGES = ("token", "control", "log", "crl")


@dataclass(frozen=True)
class Settings:
    token_url: str              # Keycloak's token endpoint (back channel, through the edge)
    control_url: str            # https://control.<domain> inside the engine
    client_id: str
    client_secret: str
    organisations: tuple[str, ...]
    ca_file: str | None = None
    timeout: float = 10.0
    crl_file: str | None = None
    keep_runs: int = 5          # finished runs whose rounds and metrics are served
    keep_rounds: int = 100      # per run: the last rounds' metrics served
    # A log stream silent this long is closed and resumed at the next scrape (the edge
    # keeps Control streams open for an hour; a run waiting for nodes says nothing).
    stream_idle: float = 300.0


def run_status(run) -> str:
    """The CLI's way of writing a run's status: finished:completed, running, ..."""
    st = run.status
    return f"{st.status}:{st.sub_status}" if st.sub_status else (st.status or "unknown")


def _time(text: str) -> float | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def families(runs: Iterable, nodes: Iterable, organisations: Iterable[str], now: float) -> list:
    """Metric families from ListRunsResponse.run_dict values and ListNodesResponse.nodes_info."""
    registered = GaugeMetricFamily("fl_supernodes_registered", "SuperNodes registered, per organisation",
                                   labels=["organisation"])
    online = GaugeMetricFamily("fl_supernodes_online", "SuperNodes online, per organisation",
                               labels=["organisation"])
    by_org_reg: Tally = Tally()
    by_org_on: Tally = Tally()
    for node in nodes:
        org = node.name or "unknown"
        if node.status != "unregistered":
            by_org_reg[org] += 1
        if node.status == "online":
            by_org_on[org] += 1
    for org in sorted(set(organisations) | set(by_org_reg)):
        registered.add_metric([org], by_org_reg[org])
        online.add_metric([org], by_org_on[org])

    counts = GaugeMetricFamily("fl_runs", "Runs known to the SuperLink, by status", labels=["status"])
    info = GaugeMetricFamily("fl_run_status", "One series per run: its app and status (always 1)",
                             labels=["run_id", "app", "status"])
    duration = GaugeMetricFamily("fl_run_duration_seconds",
                                 "From running to finished (to now while running)", labels=["run_id"])
    tally: Tally = Tally()
    for run in runs:
        status = run_status(run)
        tally[status] += 1
        info.add_metric([str(run.run_id), run.fab_id or "-", status], 1)
        start = _time(run.running_at)
        if start is not None:
            end = _time(run.finished_at) or now
            duration.add_metric([str(run.run_id)], max(0.0, end - start))
    for status in sorted(tally):
        counts.add_metric([status], tally[status])
    return [registered, online, counts, info, duration]


class ControlClient:
    """A service account's calls to the Control API through the edge."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None, clock: Callable[[], float] = time.time):
        self.s = settings
        verify = settings.ca_file or True
        self.http = http or httpx.Client(verify=verify, timeout=settings.timeout)
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self, force: bool = False) -> str:
        with self._lock:
            if force or not self._token or self.clock() > self._expires - 30:
                resp = self.http.post(self.s.token_url, data={"grant_type": "client_credentials"},
                                      auth=(self.s.client_id, self.s.client_secret))
                resp.raise_for_status()
                body = resp.json()
                self._token = body["access_token"]
                self._expires = self.clock() + float(body.get("expires_in", 60))
            return self._token

    def call(self, method: str, request, response_type):
        url = f"{self.s.control_url}/v1/control/{method}"
        for attempt in (0, 1):
            resp = self.http.post(url, content=request.SerializeToString(),
                                  headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF,
                                           "Authorization": f"Bearer {self.token(force=attempt == 1)}"})
            if resp.status_code == 401 and attempt == 0:
                continue        # expired or revoked: one new token, then give up
            resp.raise_for_status()
            out = response_type()
            out.ParseFromString(resp.content)
            return out
        raise AssertionError("unreachable")

    def stream_logs(self, run_id: int, after: float) -> Iterator[tuple[str, float]]:
        """(log text, latest timestamp) pieces of a run's log after `after`, until the
        SuperLink ends the stream (the run has finished) or it is silent for
        `stream_idle` seconds (httpx.ReadTimeout)."""
        from flwr.proto.control_pb2 import StreamLogsRequest, StreamLogsResponse  # noqa: PLC0415
        body = StreamLogsRequest(run_id=run_id, after_timestamp=after).SerializeToString()
        timeout = httpx.Timeout(self.s.timeout, read=self.s.stream_idle)
        for attempt in (0, 1):
            headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF_STREAM, "Accept-Encoding": "identity",
                       "Authorization": f"Bearer {self.token(force=attempt == 1)}"}
            with self.http.stream("POST", f"{self.s.control_url}/v1/control/stream-logs", content=body,
                                  headers=headers, timeout=timeout) as resp:
                if resp.status_code == 401 and attempt == 0:
                    continue
                resp.raise_for_status()
                for frame in frames(resp.iter_bytes()):
                    msg = StreamLogsResponse()
                    msg.ParseFromString(frame)
                    yield msg.log_output, msg.latest_timestamp
                return


def frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The messages of a Control API stream: each a 4-byte big-endian length and that
    many bytes (flwr/supercore/protobuf/client.py), split across chunks anyhow."""
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= FRAME_HEADER:
            size = int.from_bytes(buffer[:FRAME_HEADER], "big")
            if size > MAX_FRAME:
                raise ValueError(f"a log stream frame of {size} bytes (at most {MAX_FRAME})")
            if len(buffer) < FRAME_HEADER + size:
                break
            yield bytes(buffer[FRAME_HEADER:FRAME_HEADER + size])
            del buffer[:FRAME_HEADER + size]
    if buffer:
        raise ValueError(f"the log stream ended inside a frame ({len(buffer)} bytes left)")


class RunFollower:
    """One run's log, read by a background thread into a runlog.RunLog. Each start
    resumes after the last log entry read (`offset`)."""

    def __init__(self, run_id: int, client: ControlClient):
        self.run_id = run_id
        self.client = client
        self.log = runlog.RunLog()
        self.offset = 0.0
        self.ended = False          # the SuperLink ended the stream: the run had finished
        self.failures = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self.ended = False
        self._thread = threading.Thread(target=self.follow, name=f"runlog-{self.run_id}", daemon=True)
        self._thread.start()

    def follow(self) -> None:
        try:
            for text, latest in self.client.stream_logs(self.run_id, self.offset):
                with self._lock:
                    self.log.feed(text)
                    self.offset = max(self.offset, latest)
            with self._lock:
                self.log.close()
            self.ended = True
        except httpx.ReadTimeout:
            pass                    # a quiet run: resumed at the next scrape
        except Exception as exc:  # noqa: BLE001 - counted, retried at the next scrape
            self.failures += 1
            log.warning("reading the log of run %s failed: %s", self.run_id, exc)

    def snapshot(self) -> tuple[int, int | None, dict]:
        """(current round, planned rounds, {round: {phase: {name: value}}}), copied."""
        with self._lock:
            metrics = {r: {p: dict(v) for p, v in phases.items()} for r, phases in self.log.metrics.items()}
            return self.log.round, self.log.rounds, metrics


def runs_to_follow(runs: Iterable, keep: int) -> list[int]:
    """The runs whose logs are followed and whose rounds are served: every run under
    way, and the `keep` most recently submitted (finished or not)."""
    runs = list(runs)
    newest = sorted(runs, key=lambda r: (_time(r.pending_at) or 0.0, r.run_id), reverse=True)[:keep]
    chosen = {r.run_id for r in newest} | {r.run_id for r in runs if r.status.status == "running"}
    return sorted(chosen)


class RunLogs:
    """The followed runs: started and resumed at each scrape, forgotten when no longer
    among the runs to follow."""

    def __init__(self, client: ControlClient, keep_runs: int, follower=RunFollower):
        self.client = client
        self.keep_runs = keep_runs
        self.follower = follower
        self.runs: dict[int, RunFollower] = {}
        self.dropped_failures = 0
        self._lock = threading.Lock()       # scrapes may come concurrently

    def update(self, runs: Iterable) -> None:
        runs = {r.run_id: r for r in runs}
        wanted = set(runs_to_follow(runs.values(), self.keep_runs))
        with self._lock:
            for run_id in set(self.runs) - wanted:
                # a thread still reading it ends with its stream
                self.dropped_failures += self.runs.pop(run_id).failures
            for run_id in sorted(wanted):
                f = self.runs.setdefault(run_id, self.follower(run_id, self.client))
                finished = runs[run_id].status.status == "finished"
                if f.alive() or (finished and f.ended):
                    continue
                f.start()

    def failures(self) -> int:
        """Failed log reads since the exporter started (a counter)."""
        with self._lock:
            return self.dropped_failures + sum(f.failures for f in self.runs.values())

    def snapshots(self) -> dict[int, tuple]:
        with self._lock:
            followed = sorted(self.runs.items())
        return {run_id: f.snapshot() for run_id, f in followed}


def run_families(snapshots: dict[int, tuple], keep_rounds: int) -> list:
    """Rounds and per-round metrics of the followed runs (RunFollower.snapshot each)."""
    current = GaugeMetricFamily("fl_run_round", "The round a run is in (its last round once finished)",
                                labels=["run_id"])
    planned = GaugeMetricFamily("fl_run_rounds_planned", "The number of rounds a run was started with",
                                labels=["run_id"])
    metric = GaugeMetricFamily(
        "fl_run_metric", "Aggregated metrics per run and round, as the run's log gives them: phase "
        "train and evaluate (ClientApp-side, aggregated), server_evaluate (ServerApp-side; round 0 "
        "is the initial model)", labels=["run_id", "round", "phase", "name"])
    for run_id, (rnd, rounds, metrics) in snapshots.items():
        rid = str(run_id)
        current.add_metric([rid], rnd)
        if rounds is not None:
            planned.add_metric([rid], rounds)
        for r in sorted(metrics)[-keep_rounds:]:
            for phase in runlog.PHASES:
                for name, value in sorted(metrics[r].get(phase, {}).items()):
                    metric.add_metric([rid, str(r), phase, name], value)
    return [current, planned, metric]


def crl_families(pem: bytes) -> list:
    """The CRL's dates and size (cryptography, from flwr's dependencies)."""
    from cryptography import x509  # noqa: PLC0415
    crl = x509.load_pem_x509_crl(pem)
    out = [GaugeMetricFamily("fl_crl_last_update_timestamp_seconds",
                             "When the CRL the edge checks organisations against was issued",
                             value=crl.last_update_utc.timestamp())]
    if crl.next_update_utc is not None:
        out.append(GaugeMetricFamily("fl_crl_next_update_timestamp_seconds",
                                     "When that CRL expires: after it the edge refuses every organisation",
                                     value=crl.next_update_utc.timestamp()))
    out.append(GaugeMetricFamily("fl_crl_revoked_certificates", "Certificates the CRL revokes",
                                 value=len(crl)))
    return out


class FederationCollector(Collector):
    def __init__(self, client: ControlClient, organisations: tuple[str, ...], clock: Callable[[], float] = time.time,
                 *, keep_runs: int = 5, keep_rounds: int = 100, crl_file: str | None = None,
                 run_logs: RunLogs | None = None):
        self.client = client
        self.organisations = organisations
        self.clock = clock
        self.errors: Tally = Tally()
        self.last_success = 0.0
        self.keep_rounds = keep_rounds
        self.crl_file = crl_file
        self.run_logs = run_logs or RunLogs(client, keep_runs)

    def collect(self):
        from flwr.proto.control_pb2 import (ListNodesRequest, ListNodesResponse,  # noqa: PLC0415
                                            ListRunsRequest, ListRunsResponse)
        fams = []
        try:
            runs = self.client.call("list-runs", ListRunsRequest(), ListRunsResponse)
            nodes = self.client.call("list-nodes", ListNodesRequest(), ListNodesResponse)
            fams = families(runs.run_dict.values(), nodes.nodes_info, self.organisations, self.clock())
            self.last_success = self.clock()
            self.run_logs.update(runs.run_dict.values())
            fams += run_families(self.run_logs.snapshots(), self.keep_rounds)
        except Exception as exc:  # noqa: BLE001 - any failure is a scrape error, served as a metric
            stage = "token" if "openid-connect/token" in str(exc) else "control"
            self.errors[stage] += 1
            log.warning("reading the federation failed (%s): %s", stage, exc)
        yield from fams
        if self.crl_file:
            try:
                yield from crl_families(Path(self.crl_file).read_bytes())
            except Exception as exc:  # noqa: BLE001 - unreadable or not a CRL: counted
                self.errors["crl"] += 1
                log.warning("reading the CRL %s failed: %s", self.crl_file, exc)
        errors = CounterMetricFamily("fl_exporter_errors", "Failed reads of the federation, by stage",
                                     labels=["stage"])
        for stage in STAGES:
            value = self.run_logs.failures() if stage == "log" else self.errors[stage]
            errors.add_metric([stage], value)
        yield errors
        yield GaugeMetricFamily("fl_exporter_last_success_timestamp_seconds",
                                "When the federation was last read successfully", value=self.last_success)


def serve(settings: Settings, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    registry = CollectorRegistry()
    registry.register(FederationCollector(ControlClient(settings), settings.organisations,
                                          keep_runs=settings.keep_runs, keep_rounds=settings.keep_rounds,
                                          crl_file=settings.crl_file))
    start_http_server(port, registry=registry)
    log.info("serving /metrics on :%d for %d organisations", port, len(settings.organisations))
    while True:
        time.sleep(3600)
