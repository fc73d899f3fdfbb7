"""flexporter: metric families from the Control API's answers, the service account's
token (refreshed once on 401), runs' logs followed and resumed, the CRL's dates, errors
counted; the entrypoint's settings."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from flwr.proto.control_pb2 import ListNodesResponse, ListRunsResponse, StreamLogsRequest, StreamLogsResponse
from flwr.proto.node_pb2 import NodeInfo
from prometheus_client import CollectorRegistry, generate_latest

from testcerts import load_entrypoint, make_ca

SERVICE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVICE))
from flexporter import exporter  # noqa: E402

NOW = 1_800_000_000.0
ORGS = ("alpha", "bravo", "charlie")
# The sample app's real log (test_fl_runlog.py), as the SuperLink hands it out: entries
# of a few lines, each with its timestamp.
LOG_LINES = (Path(__file__).parent / "digits-run.log").read_text().splitlines(keepends=True)
ENTRIES = [(1000.0 + i, "".join(LOG_LINES[i * 5:i * 5 + 5])) for i in range((len(LOG_LINES) + 4) // 5)]


def runs_response() -> ListRunsResponse:
    resp = ListRunsResponse()
    done = resp.run_dict[1]
    done.run_id, done.fab_id = 1, "flwrlabs/digits"
    done.status.status, done.status.sub_status = "finished", "completed"
    done.running_at, done.finished_at = "2027-01-15T08:00:00Z", "2027-01-15T08:01:40Z"
    failed = resp.run_dict[2]
    failed.run_id, failed.fab_id = 2, "flwrlabs/digits"
    failed.status.status, failed.status.sub_status = "finished", "failed"
    running = resp.run_dict[3]
    running.run_id = 3
    running.status.status = "running"
    running.running_at = "2027-01-15T08:00:00+00:00"
    return resp


def nodes_response() -> ListNodesResponse:
    return ListNodesResponse(nodes_info=[NodeInfo(node_id=11, name="alpha", status="online"),
                                         NodeInfo(node_id=12, name="bravo", status="offline"),
                                         NodeInfo(node_id=13, name="charlie", status="unregistered")])


def samples(fams) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def test_supernodes_per_organisation_and_runs_by_status():
    got = samples(exporter.families(runs_response().run_dict.values(), nodes_response().nodes_info, ORGS,
                                    now=exporter._time("2027-01-15T08:05:00Z")))
    assert got[("fl_supernodes_online", (("organisation", "alpha"),))] == 1
    assert got[("fl_supernodes_online", (("organisation", "bravo"),))] == 0
    assert got[("fl_supernodes_online", (("organisation", "charlie"),))] == 0
    assert got[("fl_supernodes_registered", (("organisation", "bravo"),))] == 1
    assert got[("fl_supernodes_registered", (("organisation", "charlie"),))] == 0   # unregistered
    assert got[("fl_runs", (("status", "finished:completed"),))] == 1
    assert got[("fl_runs", (("status", "finished:failed"),))] == 1
    assert got[("fl_runs", (("status", "running"),))] == 1
    assert got[("fl_run_status", (("app", "flwrlabs/digits"), ("run_id", "2"), ("status", "finished:failed")))] == 1
    assert got[("fl_run_duration_seconds", (("run_id", "1"),))] == 100
    assert got[("fl_run_duration_seconds", (("run_id", "3"),))] == 300       # still running: until now
    assert ("fl_run_duration_seconds", (("run_id", "2"),)) not in got        # never ran


class Unfollowed:
    """No run logs (their following is tested on its own below)."""

    def update(self, runs):
        pass

    def failures(self):
        return 0

    def snapshots(self):
        return {}


class FakeEdge:
    """Keycloak's token endpoint and the Control API behind ctlgate, as the edge serves them."""

    def __init__(self):
        self.tokens = 0
        self.reject_next = False
        self.calls = []
        self.log_requests = []
        self.upto = len(ENTRIES)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-connect/token"):
            assert b"grant_type=client_credentials" in request.content
            self.tokens += 1
            return httpx.Response(200, json={"access_token": f"t{self.tokens}", "expires_in": 300})
        self.calls.append((request.url.path, request.headers["authorization"]))
        if self.reject_next:
            self.reject_next = False
            return httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
        assert request.headers["content-type"] == "application/protobuf"
        if request.url.path.endswith("stream-logs"):
            return self.stream_logs(request)
        body = runs_response() if request.url.path.endswith("list-runs") else nodes_response()
        return httpx.Response(200, content=body.SerializeToString())

    def stream_logs(self, request: httpx.Request) -> httpx.Response:
        """The log entries after the request's timestamp (up to `upto` of them), each
        framed as flwr's protobuf stream frames it, in chunks that split frames."""
        assert request.headers["accept"] == "application/flower-protobuf-stream"
        req = StreamLogsRequest()
        req.ParseFromString(request.content)
        self.log_requests.append((req.run_id, req.after_timestamp))
        out = b""
        for ts, text in ENTRIES[:self.upto]:
            if ts > req.after_timestamp:
                msg = StreamLogsResponse(log_output=text, latest_timestamp=ts).SerializeToString()
                out += len(msg).to_bytes(4, "big") + msg
        return httpx.Response(200, stream=httpx.ByteStream(out),
                              headers={"content-type": "application/flower-protobuf-stream"})


SETTINGS = exporter.Settings("https://auth.fl.test/realms/flowerfl/protocol/openid-connect/token",
                             "https://control.fl.test", "fl-exporter", "s3cret", ORGS)


def test_the_collector_reads_through_the_control_api_with_one_token():
    edge = FakeEdge()
    client = exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(edge.handler)),
                                    clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(exporter.FederationCollector(client, ORGS, clock=lambda: NOW, run_logs=Unfollowed()))
    text = generate_latest(registry).decode()
    assert 'fl_supernodes_online{organisation="alpha"} 1.0' in text
    assert 'fl_exporter_errors_total{stage="control"} 0.0' in text
    generate_latest(registry)
    assert edge.tokens == 1
    assert [p for p, _ in edge.calls] == ["/v1/control/list-runs", "/v1/control/list-nodes"] * 2


def test_a_rejected_token_is_renewed_once():
    edge = FakeEdge()
    client = exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(edge.handler)),
                                    clock=lambda: NOW)
    from flwr.proto.control_pb2 import ListRunsRequest
    client.token()
    edge.reject_next = True
    assert len(client.call("list-runs", ListRunsRequest(), ListRunsResponse).run_dict) == 3
    assert edge.tokens == 2 and [a for _, a in edge.calls] == ["Bearer t1", "Bearer t2"]


def test_a_failing_edge_is_counted_not_raised():
    def down(request):
        return httpx.Response(503) if "control" in request.url.host else httpx.Response(
            200, json={"access_token": "t", "expires_in": 300})
    client = exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(down)))
    registry = CollectorRegistry()
    registry.register(exporter.FederationCollector(client, ORGS, run_logs=Unfollowed()))
    text = generate_latest(registry).decode()
    assert 'fl_exporter_errors_total{stage="control"} 1.0' in text
    assert "fl_supernodes_online" not in text


def test_the_entrypoint_reaches_keycloak_and_the_control_api_through_the_edge():
    entry = load_entrypoint(SERVICE / "entrypoint.py", "fl_exporter_entry")
    fed = {"hostnames": {"auth": "auth.fl.test", "control": "control.fl.test"},
           "organisations": [{"name": "alpha"}, {"name": "bravo"}]}
    s = entry.settings_from(fed, "s3cret", tls=Path("/etc/fl/tls"))
    assert s["token_url"] == "https://auth.fl.test/realms/flowerfl/protocol/openid-connect/token"
    assert s["crl_file"] == "/etc/fl/tls/crl.pem" and s["ca_file"] == "/etc/fl/tls/ca.crt"
    assert s["control_url"] == "https://control.fl.test" and s["organisations"] == ["alpha", "bravo"]
    with pytest.raises(SystemExit):
        entry.settings_from({"hostnames": {"auth": "auth.fl.test"}}, "s3cret")


# ---- rounds and metrics from the runs' logs ------------------------------------------------

def edge_client(edge: FakeEdge) -> exporter.ControlClient:
    return exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(edge.handler)),
                                  clock=lambda: NOW)


def test_stream_frames_are_read_however_the_chunks_split_them():
    msgs = [b"", b"a", b"\x00" * 300]
    data = b"".join(len(m).to_bytes(4, "big") + m for m in msgs)
    assert list(exporter.frames([data])) == msgs
    assert list(exporter.frames(data[i:i + 1] for i in range(len(data)))) == msgs
    with pytest.raises(ValueError, match="inside a frame"):
        list(exporter.frames([data[:-1]]))
    with pytest.raises(ValueError, match="at most"):
        list(exporter.frames([(exporter.MAX_FRAME + 1).to_bytes(4, "big")]))


def test_a_runs_log_is_read_once_resumed_where_it_stopped():
    edge = FakeEdge()
    edge.upto = 6                           # the run is in round 1: part of its log so far
    follower = exporter.RunFollower(7, edge_client(edge))
    follower.follow()                       # in the background thread, normally
    rnd, planned, metrics = follower.snapshot()
    assert (rnd, planned) == (1, 3) and sorted(metrics) == [0, 1]
    edge.upto = len(ENTRIES)                # the rest, after the run finished
    follower.follow()
    assert edge.log_requests == [(7, 0.0), (7, ENTRIES[5][0])]       # resumed, not re-read
    rnd, planned, metrics = follower.snapshot()
    assert (rnd, planned) == (3, 3)
    assert metrics[2]["server_evaluate"]["accuracy"] == pytest.approx(0.8911, abs=1e-4)
    assert follower.ended and follower.failures == 0


def test_a_failed_log_read_is_counted_and_retried():
    def refuse(request):
        if request.url.path.endswith("/openid-connect/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        return httpx.Response(403)
    client = exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(refuse)))
    follower = exporter.RunFollower(7, client)
    follower.follow()
    assert follower.failures == 1 and not follower.ended


class Run:
    def __init__(self, run_id, status, pending_at):
        self.run_id, self.pending_at = run_id, pending_at
        self.status = type("Status", (), {"status": status})()


RUNS = [Run(1, "finished", "2027-01-15T08:00:00Z"), Run(2, "running", "2027-01-15T08:01:00Z"),
        Run(3, "finished", "2027-01-15T08:02:00Z"), Run(4, "finished", "2027-01-15T08:03:00Z"),
        Run(5, "pending", "2027-01-15T08:04:00Z")]


def test_the_runs_followed_are_those_under_way_and_the_newest():
    assert exporter.runs_to_follow(RUNS, keep=2) == [2, 4, 5]        # 2 is running: always
    assert exporter.runs_to_follow(RUNS, keep=0) == [2]
    assert exporter.runs_to_follow(RUNS, keep=10) == [1, 2, 3, 4, 5]


class Recorder:
    """A follower that records its starts (its reading is tested above)."""
    starts: list = []

    def __init__(self, run_id, client):
        self.run_id, self.ended, self.failures = run_id, False, 0

    def alive(self):
        return False

    def start(self):
        Recorder.starts.append(self.run_id)

    def snapshot(self):
        return (1, 3, {})


def test_followers_start_resume_and_are_forgotten():
    Recorder.starts = []
    logs = exporter.RunLogs(client=None, keep_runs=2, follower=Recorder)
    logs.update(RUNS)
    assert Recorder.starts == [2, 4, 5] and sorted(logs.snapshots()) == [2, 4, 5]
    logs.runs[4].ended = True               # finished and read to the end: left alone
    logs.runs[2].ended = True               # its stream ended, but the run goes on: resumed
    logs.runs[5].failures = 2
    logs.update(RUNS)
    assert Recorder.starts == [2, 4, 5, 2, 5]
    newer = RUNS + [Run(6, "finished", "2027-01-15T08:05:00Z"), Run(7, "finished", "2027-01-15T08:06:00Z")]
    logs.update(newer)
    assert sorted(logs.runs) == [2, 6, 7]   # 4 and 5 forgotten, their failures still counted
    assert logs.failures() == 2


def test_rounds_and_metrics_as_series_bounded_per_run():
    edge = FakeEdge()
    follower = exporter.RunFollower(7, edge_client(edge))
    follower.follow()
    got = samples(exporter.run_families({7: follower.snapshot()}, keep_rounds=2))
    assert got[("fl_run_round", (("run_id", "7"),))] == 3
    assert got[("fl_run_rounds_planned", (("run_id", "7"),))] == 3
    acc = ("fl_run_metric", (("name", "accuracy"), ("phase", "server_evaluate"), ("round", "3"), ("run_id", "7")))
    assert got[acc] == pytest.approx(0.9244, abs=1e-4)
    train = ("fl_run_metric", (("name", "train_loss"), ("phase", "train"), ("round", "2"), ("run_id", "7")))
    assert got[train] == pytest.approx(0.4640, abs=1e-4)
    assert {dict(k[1])["round"] for k in got if k[0] == "fl_run_metric"} == {"2", "3"}   # the last 2 rounds
    assert sum(1 for k in got if k[0] == "fl_run_metric") == 12       # 2 rounds x 3 phases x 2 names


def crl_pem(days: float, revoked: int = 0) -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    key, cert = make_ca()
    now = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=days)))
    for serial in range(1, revoked + 1):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_the_crls_dates_are_metrics(tmp_path):
    crl = tmp_path / "crl.pem"
    crl.write_bytes(crl_pem(days=180, revoked=2))
    edge = FakeEdge()
    registry = CollectorRegistry()
    registry.register(exporter.FederationCollector(edge_client(edge), ORGS, clock=lambda: NOW,
                                                   crl_file=str(crl), run_logs=Unfollowed()))
    got = samples(registry.collect())
    assert got[("fl_crl_next_update_timestamp_seconds", ())] == NOW + 180 * 86400
    assert got[("fl_crl_last_update_timestamp_seconds", ())] == NOW
    assert got[("fl_crl_revoked_certificates", ())] == 2
    crl.write_text("not a CRL")                 # unreadable: counted, no CRL series
    got = samples(registry.collect())
    assert ("fl_crl_next_update_timestamp_seconds", ()) not in got
    assert got[("fl_exporter_errors_total", (("stage", "crl"),))] == 1


def test_the_collector_follows_the_runs_it_lists():
    edge = FakeEdge()
    client = edge_client(edge)
    collector = exporter.FederationCollector(client, ORGS, clock=lambda: NOW, keep_runs=2)
    list(collector.collect())
    for f in collector.run_logs.runs.values():  # the background threads of this scrape
        f._thread.join(10)
    assert sorted(edge.log_requests) == [(2, 0.0), (3, 0.0)]   # the 2 newest (no pending_at: by id)
    got = samples(collector.collect())
    assert got[("fl_run_round", (("run_id", "3"),))] == 3
    assert got[("fl_run_round", (("run_id", "2"),))] == 3
    assert ("fl_run_round", (("run_id", "1"),)) not in got
    for f in collector.run_logs.runs.values():
        f._thread.join(10)
    # run 2 finished and was read to its end: left alone; run 3 is still running: resumed
    assert edge.log_requests[2:] == [(3, ENTRIES[-1][0])]
