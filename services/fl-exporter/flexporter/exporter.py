"""The federation as Prometheus metrics, read through the edge's control.<domain> like any
client: a Keycloak service account (client credentials, realm role superlink_viewer)
whose token ctlgate admits to the Control API's read-only methods only.

On every scrape: ListRuns and ListNodes (POST /v1/control/<method>, protobuf), turned
into metric families by the pure function `families`. A failed call is counted in
fl_exporter_errors_total{stage} and the scrape serves what it has (no FL series).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("flexporter")
PROTOBUF = "application/protobuf"


@dataclass(frozen=True)
class Settings:
    token_url: str              # Keycloak's token endpoint (back channel, through the edge)
    control_url: str            # https://control.<domain> inside the engine
    client_id: str
    client_secret: str
    organisations: tuple[str, ...]
    ca_file: str | None = None
    timeout: float = 10.0


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


class FederationCollector(Collector):
    def __init__(self, client: ControlClient, organisations: tuple[str, ...], clock: Callable[[], float] = time.time):
        self.client = client
        self.organisations = organisations
        self.clock = clock
        self.errors: Tally = Tally()
        self.last_success = 0.0

    def collect(self):
        from flwr.proto.control_pb2 import (ListNodesRequest, ListNodesResponse,  # noqa: PLC0415
                                            ListRunsRequest, ListRunsResponse)
        fams = []
        try:
            runs = self.client.call("list-runs", ListRunsRequest(), ListRunsResponse)
            nodes = self.client.call("list-nodes", ListNodesRequest(), ListNodesResponse)
            fams = families(runs.run_dict.values(), nodes.nodes_info, self.organisations, self.clock())
            self.last_success = self.clock()
        except Exception as exc:  # noqa: BLE001 - any failure is a scrape error, served as a metric
            stage = "token" if "openid-connect/token" in str(exc) else "control"
            self.errors[stage] += 1
            log.warning("reading the federation failed (%s): %s", stage, exc)
        yield from fams
        errors = CounterMetricFamily("fl_exporter_errors", "Failed reads of the federation, by stage",
                                     labels=["stage"])
        for stage in ("token", "control"):
            errors.add_metric([stage], self.errors[stage])
        yield errors
        yield GaugeMetricFamily("fl_exporter_last_success_timestamp_seconds",
                                "When the federation was last read successfully", value=self.last_success)


def serve(settings: Settings, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    registry = CollectorRegistry()
    registry.register(FederationCollector(ControlClient(settings), settings.organisations))
    start_http_server(port, registry=registry)
    log.info("serving /metrics on :%d for %d organisations", port, len(settings.organisations))
    while True:
        time.sleep(3600)
