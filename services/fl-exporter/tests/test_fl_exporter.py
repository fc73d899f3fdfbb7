"""flexporter: metric families from the Control API's answers, the service account's
token (refreshed once on 401), errors counted; the entrypoint's settings."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from flwr.proto.control_pb2 import ListNodesResponse, ListRunsResponse
from flwr.proto.node_pb2 import NodeInfo
from prometheus_client import CollectorRegistry, generate_latest

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVICE))
from flexporter import exporter  # noqa: E402

NOW = 1_800_000_000.0
ORGS = ("alpha", "bravo", "charlie")


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


class FakeEdge:
    """Keycloak's token endpoint and the Control API behind ctlgate, as the edge serves them."""

    def __init__(self):
        self.tokens = 0
        self.reject_next = False
        self.calls = []

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
        body = runs_response() if request.url.path.endswith("list-runs") else nodes_response()
        return httpx.Response(200, content=body.SerializeToString())


SETTINGS = exporter.Settings("https://auth.fl.test/realms/flowerfl/protocol/openid-connect/token",
                             "https://control.fl.test", "fl-exporter", "s3cret", ORGS)


def test_the_collector_reads_through_the_control_api_with_one_token():
    edge = FakeEdge()
    client = exporter.ControlClient(SETTINGS, http=httpx.Client(transport=httpx.MockTransport(edge.handler)),
                                    clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(exporter.FederationCollector(client, ORGS, clock=lambda: NOW))
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
    registry.register(exporter.FederationCollector(client, ORGS))
    text = generate_latest(registry).decode()
    assert 'fl_exporter_errors_total{stage="control"} 1.0' in text
    assert "fl_supernodes_online" not in text


def test_the_entrypoint_reaches_keycloak_and_the_control_api_through_the_edge():
    entry = load_entrypoint(SERVICE / "entrypoint.py", "fl_exporter_entry")
    fed = {"hostnames": {"auth": "auth.fl.test", "control": "control.fl.test"},
           "organisations": [{"name": "alpha"}, {"name": "bravo"}]}
    s = entry.settings_from(fed, "s3cret", tls=Path("/etc/fl/tls"))
    assert s["token_url"] == "https://auth.fl.test/realms/flowerfl/protocol/openid-connect/token"
    assert s["control_url"] == "https://control.fl.test" and s["organisations"] == ["alpha", "bravo"]
    with pytest.raises(SystemExit):
        entry.settings_from({"hostnames": {"auth": "auth.fl.test"}}, "s3cret")
