"""The real ``flwr`` CLI (1.42) against the gateway: login, ls, silent refresh.

An "edge" test server stands in for NGINX + SuperLink: it serves TLS (the CLI refuses
``flwr login`` without it), hands the three login paths to the gateway's handler and
answers every other ``/v1/control/*`` the way ``auth_request`` would -- 401 with the
gateway's ``WWW-Authenticate`` copied, 403, or (on 200) a canned ``ListRunsResponse``
as if the SuperLink had answered. Keycloak is the in-process fake from conftest.
Skipped when the ``flwr`` executable is not next to the running Python.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fakekeycloak import DeviceGrant, FakeKeycloak, Realm
from ctlgate.control import LOGIN_PATHS
from ctlgate.server import Handler, Server
from flwr.proto.control_pb2 import ListRunsResponse
from testcerts import make_ca, make_leaf, write_tls

FLWR = Path(sys.executable).with_name("flwr")
pytestmark = pytest.mark.skipif(not FLWR.exists(), reason="flwr CLI not installed next to python")


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    """The edge's TLS material: a CA and a certificate for IP:127.0.0.1."""
    ca = make_ca("ctlgate test CA")
    write_tls(tmp, ca, make_leaf(ca, "control.fl.test", ips=("127.0.0.1",)))
    return tmp / "ca.crt", tmp / "tls.crt", tmp / "tls.key"


class EdgeHandler(Handler):
    """NGINX control vhost + SuperLink, as far as the CLI can tell."""

    superlink_calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        if path in LOGIN_PATHS:
            super().do_POST()  # NGINX: straight to ctlgate
            return
        decision = self.gateway.authorize(self.headers.get("Authorization"))  # auth_request
        if decision.status in (401, 403):
            headers = []
            if decision.status == 401 and decision.www_authenticate:
                headers.append(("WWW-Authenticate", decision.www_authenticate))
            self._send(decision.status, b"<html>nginx</html>", "text/html", headers)
            return
        if decision.status != 200:
            self._send(500, b"<html>nginx</html>", "text/html")
            return
        body = self._read_body(1 << 20)
        self.superlink_calls.append(path)
        assert body is not None
        self._send(200, ListRunsResponse(now="2025-01-01T00:00:00.000000Z").SerializeToString(), "application/protobuf")


@pytest.fixture()
def edge(gateway, tmp_path: Path):
    ca, crt, key = make_tls(tmp_path)
    srv = Server(("127.0.0.1", 0), gateway)
    srv.RequestHandlerClass = EdgeHandler
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    EdgeHandler.superlink_calls = []
    yield f"127.0.0.1:{srv.server_address[1]}", ca
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def flwr(edge, tmp_path: Path):
    address, ca = edge
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        "[superlink]\n"
        'default = "fl"\n\n'
        "[superlink.fl]\n"
        f'address = "{address}"\n'
        f'root-certificates = "{ca}"\n'
    )
    env = dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        BROWSER="true",  # webbrowser.open() runs `true URL`
        NO_COLOR="1",
        COLUMNS="200",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLWR), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    run.home = home  # type: ignore[attr-defined]
    return run


def test_login_ls_refresh_and_expiry(flwr, keycloak: FakeKeycloak, realm: Realm) -> None:
    # not logged in: the edge says 401 and the CLI asks for a login
    before = flwr("ls", "fl")
    assert before.returncode != 0
    assert "flwr login" in before.stdout + before.stderr

    keycloak.next_device = lambda: DeviceGrant(approve_after=1)
    login = flwr("login", "fl")
    assert login.returncode == 0, login.stdout + login.stderr
    assert "Login successful" in login.stdout
    assert "/realms/flowerfl/device?user_code=ABCD-EFGH" in login.stdout
    credentials = (flwr.home / "credentials.yaml").read_text()
    # values are base64: authn-type "oidc", then the two tokens
    assert "authn-type: b2lkYw==" in credentials
    assert "oidc-access-token" in credentials and "oidc-refresh-token" in credentials

    listed = flwr("ls", "fl", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert '"success": true' in listed.stdout
    assert EdgeHandler.superlink_calls == ["/v1/control/list-runs"]

    # access token expires: 401 Bearer -> refresh-auth-tokens -> retry succeeds
    realm.clock.advance(400)
    refreshes = sum(1 for p, f in keycloak.calls if f.get("grant_type") == ["refresh_token"])
    listed = flwr("ls", "fl", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert sum(1 for p, f in keycloak.calls if f.get("grant_type") == ["refresh_token"]) == refreshes + 1
    assert EdgeHandler.superlink_calls == ["/v1/control/list-runs"] * 2
    assert (flwr.home / "credentials.yaml").read_text() != credentials  # new tokens stored

    # session ends in Keycloak: the refresh fails and the CLI says to log in again
    keycloak.revoke_all()
    realm.clock.advance(400)
    expired = flwr("ls", "fl")
    assert expired.returncode != 0
    assert "[code: 36] Your session expired. Run `flwr login` again." in expired.stdout + expired.stderr
    assert EdgeHandler.superlink_calls == ["/v1/control/list-runs"] * 2


def test_login_without_role_is_refused(flwr, keycloak: FakeKeycloak) -> None:
    keycloak.next_user = {"realm_access": {"roles": ["default-roles-flowerfl"]}}
    keycloak.next_device = lambda: DeviceGrant(approve_after=0)
    login = flwr("login", "fl")
    assert login.returncode != 0
    assert "[code: 9] Your account has no 'superlink_user' realm role" in login.stdout + login.stderr
    assert not (flwr.home / "credentials.yaml").exists()


def test_role_removed_after_login_gives_403(flwr, keycloak: FakeKeycloak, realm: Realm) -> None:
    keycloak.next_device = lambda: DeviceGrant(approve_after=0)
    assert flwr("login", "fl").returncode == 0
    # the role is taken away: the next refreshed token lacks it
    for user in keycloak.refresh_tokens.values():
        user["realm_access"] = {"roles": []}
    realm.clock.advance(400)
    result = flwr("ls", "fl")
    assert result.returncode != 0
    assert "superlink_user" in result.stdout + result.stderr
    assert EdgeHandler.superlink_calls == []
