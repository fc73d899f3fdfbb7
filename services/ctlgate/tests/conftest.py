"""Fixtures for ctlgate's tests; the test doubles are in fakekeycloak.py."""
from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fakekeycloak import Config, FakeKeycloak, Realm, make_config, new_rsa_key


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture()
def realm(rsa_key: rsa.RSAPrivateKey) -> Realm:
    return Realm(rsa_key)


@pytest.fixture()
def keycloak(realm: Realm) -> FakeKeycloak:
    return FakeKeycloak(realm)


@pytest.fixture()
def config() -> Config:
    return make_config()


@pytest.fixture()
def gateway(config: Config, keycloak: FakeKeycloak, realm: Realm):
    from ctlgate.server import Gateway

    http = httpx.Client(transport=httpx.MockTransport(keycloak.handler))
    gw = Gateway(config, http=http, clock=realm.clock)
    yield gw
    http.close()


@pytest.fixture()
def server(gateway):
    """The gateway serving HTTP on a free local port: "127.0.0.1:<port>"."""
    import threading

    from ctlgate.server import Server
    srv = Server(("127.0.0.1", 0), gateway)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
