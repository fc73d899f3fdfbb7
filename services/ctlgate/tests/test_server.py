"""The HTTP server over real sockets, driven by flwr's own ControlHttpClient."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from fakekeycloak import DeviceGrant, FakeKeycloak, Realm, make_config
from ctlgate.server import Gateway, Server
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetLoginDetailsRequest,
    RefreshAuthTokensRequest,
)
from flwr.supercore.control import ControlHttpClient


def test_flwr_client_speaks_to_the_login_endpoints(server, keycloak: FakeKeycloak, realm: Realm) -> None:
    keycloak.next_device = lambda: DeviceGrant(approve_after=1)
    client = ControlHttpClient.from_server_address(server, insecure=True, root_certificates=None, interceptors=[])
    try:
        details = client.GetLoginDetails(GetLoginDetailsRequest())
        assert details.authn_type == "oidc" and details.interval == 1
        pending = client.GetAuthTokens(GetAuthTokensRequest(device_code=details.device_code))
        assert not pending.access_token
        tokens = client.GetAuthTokens(GetAuthTokensRequest(device_code=details.device_code))
        assert tokens.access_token and tokens.refresh_token
        refreshed = client.RefreshAuthTokens(RefreshAuthTokensRequest(refresh_token=tokens.refresh_token))
        assert refreshed.access_token and refreshed.access_token != tokens.access_token
        with pytest.raises(httpx.HTTPStatusError) as info:
            client.RefreshAuthTokens(RefreshAuthTokensRequest(refresh_token="rt-bogus"))
        assert info.value.response.status_code == 401
        assert info.value.response.headers["WWW-Authenticate"] == "Bearer"
    finally:
        client.close()


def test_auth_endpoint(server, realm: Realm) -> None:
    base = f"http://{server}"
    with httpx.Client() as http:
        ok = http.get(f"{base}/auth", headers={"Authorization": f"Bearer {realm.token()}"})
        assert ok.status_code == 200
        assert ok.headers["X-Ctlgate-User"] == "researcher"
        assert "WWW-Authenticate" not in ok.headers

        none = http.get(f"{base}/auth")
        assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer"

        expired = realm.token(exp=int(realm.clock()) - 1)
        bad = http.get(f"{base}/auth", headers={"Authorization": f"Bearer {expired}"})
        assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer"
        assert bad.headers["X-Ctlgate-Reason"] == "expired"

        norole = realm.token(realm_access={"roles": []})
        forbidden = http.get(f"{base}/auth", headers={"Authorization": f"Bearer {norole}"})
        assert forbidden.status_code == 403

        # NGINX may pass the client's method on to the subrequest
        post = http.post(f"{base}/auth", headers={"Authorization": f"Bearer {realm.token()}"})
        assert post.status_code == 200

        metrics = http.get(f"{base}/metrics").text
        assert 'ctlgate_auth_decisions_total{decision="allow",reason="ok"} 2.0' in metrics
        assert 'ctlgate_auth_decisions_total{decision="deny",reason="missing_token"} 1.0' in metrics
        assert 'ctlgate_auth_decisions_total{decision="deny",reason="expired"} 1.0' in metrics
        assert 'ctlgate_auth_decisions_total{decision="deny",reason="missing_role"} 1.0' in metrics
        assert 'ctlgate_jwks_fetches_total{outcome="ok"} 1.0' in metrics


def test_unknown_kid_triggers_one_jwks_refresh(server, realm: Realm, keycloak: FakeKeycloak) -> None:
    base = f"http://{server}"
    with httpx.Client() as http:
        http.get(f"{base}/auth", headers={"Authorization": f"Bearer {realm.token()}"})
        assert keycloak.jwks_fetches == 1
        realm.kid = "rotated-key"  # Keycloak rotated its active key
        token = realm.token()
        assert http.get(f"{base}/auth", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        # the JWKS was fetched less than min_refresh (10 s) ago: no new fetch yet
        assert keycloak.jwks_fetches == 1


def test_unknown_kid_refreshes_jwks_after_min_interval(realm: Realm, keycloak: FakeKeycloak) -> None:
    config = make_config(CTLGATE_JWKS_MIN_REFRESH=0)
    gw = Gateway(config, http=httpx.Client(transport=httpx.MockTransport(keycloak.handler)), clock=realm.clock)
    assert gw.authorize(f"Bearer {realm.token()}").allowed
    realm.kid = "rotated-key"
    assert gw.authorize(f"Bearer {realm.token()}").allowed
    assert keycloak.jwks_fetches == 2


def test_jwks_unavailable_fails_closed(realm: Realm, keycloak: FakeKeycloak) -> None:
    keycloak.down = True
    gw = Gateway(make_config(), http=httpx.Client(transport=httpx.MockTransport(keycloak.handler)), clock=realm.clock)
    decision = gw.authorize(f"Bearer {realm.token()}")
    assert decision.status == 503 and not decision.allowed


def test_health_forbidden_and_routing(server) -> None:
    base = f"http://{server}"
    with httpx.Client() as http:
        assert http.get(f"{base}/healthz").json()["status"] == "ok"
        forbidden = http.post(f"{base}/forbidden", content=b"x")
        assert forbidden.status_code == 403 and forbidden.json()["code"] == 9
        assert http.get(f"{base}/v1/control/list-runs").status_code == 404
        assert http.post(f"{base}/v1/control/start-run").status_code == 404
        assert http.get(f"{base}/v1/control/get-login-details").status_code == 405


def test_status_probes(realm: Realm, keycloak: FakeKeycloak) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        config = make_config(
            CTLGATE_PROBES=(
                f"postgres=tcp://127.0.0.1:{open_port},"
                f"grafana=tcp://127.0.0.1:{closed_port},"
                f"superlink=grpc://127.0.0.1:{closed_port}|tcp://127.0.0.1:{open_port},"
                "jupyterhub=tcp://no-such-host.invalid:8000"
            ),
            CTLGATE_PROBE_TIMEOUT=0.5,
        )
        gw = Gateway(config, http=httpx.Client(transport=httpx.MockTransport(keycloak.handler)))
        status = gw.prober.status()
        services = status["services"]
        assert services["postgres"]["up"] is True
        assert services["grafana"]["up"] is False and "refused" in services["grafana"]["detail"]
        assert services["superlink"]["up"] is True  # fell back to TCP
        assert services["jupyterhub"]["up"] is False
        assert status["all_up"] is False
        assert gw.prober.status() is status  # cached
        assert 'ctlgate_service_up{service="postgres"} 1.0' in (
            __import__("prometheus_client").generate_latest(gw.metrics.registry).decode()
        )
    finally:
        listener.close()


def test_the_gateway_serves_https_with_its_certificate(gateway, tmp_path) -> None:
    """The edge reaches ctlgate over TLS and verifies its certificate (the control. host
    carries bearer and refresh tokens); plain HTTP and an unknown CA get nowhere."""
    import ssl
    from ctlgate.server import make_server_tls_context
    from testcerts import make_ca, make_leaf, pem_cert, pem_key
    ca = make_ca("test CA")
    key, cert = make_leaf(ca, "ctlgate", dns=["ctlgate", "localhost"])
    (tmp_path / "ca.crt").write_bytes(pem_cert(ca[1]))
    (tmp_path / "tls.crt").write_bytes(pem_cert(cert))
    (tmp_path / "tls.key").write_bytes(pem_key(key))
    srv = Server(("127.0.0.1", 0), gateway, make_server_tls_context(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = srv.server_address[1]
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with httpx.Client(verify=context) as http:
            assert http.get(f"https://localhost:{port}/healthz").status_code == 200
        with httpx.Client() as http, pytest.raises(httpx.HTTPError):
            http.get(f"http://localhost:{port}/healthz", timeout=3)
        with httpx.Client(verify=ssl.create_default_context()) as http, pytest.raises(httpx.ConnectError):
            http.get(f"https://localhost:{port}/healthz")
        with httpx.Client(verify=context) as http:   # still serving after the refusals
            assert http.get(f"https://localhost:{port}/healthz").status_code == 200
    finally:
        srv.shutdown()
        srv.server_close()
