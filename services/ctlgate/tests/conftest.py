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
