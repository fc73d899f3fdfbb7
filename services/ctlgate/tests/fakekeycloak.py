"""Test doubles shared by ctlgate's tests: an RSA realm key, a token minter and a fake
Keycloak (imported by name: `from fakekeycloak import ...`; the fixtures are in conftest).

The fake Keycloak is an ``httpx.MockTransport`` handler that answers the realm's
JWKS, device-authorization and token endpoints the way Keycloak does
(RFC 8628 errors as HTTP 400 JSON), so the gateway's own HTTP client talks to it
unchanged.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctlgate.config import Config  # noqa: E402

DOMAIN = "fl.test"
ISSUER = f"https://auth.{DOMAIN}/realms/flowerfl"
AUDIENCE = "ctlgate"
ROLE = "superlink_user"
KID = "realm-key-1"


class Clock:
    """A settable clock shared by the fake Keycloak and the gateway."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return jwk


@dataclass
class Realm:
    key: rsa.RSAPrivateKey
    kid: str = KID
    clock: Clock = field(default_factory=Clock)

    @property
    def jwks(self) -> dict[str, Any]:
        # Keycloak also publishes an encryption key; the gateway must skip it.
        enc = dict(jwk_of(self.key, "enc-key"), use="enc", alg="RSA-OAEP")
        return {"keys": [jwk_of(self.key, self.kid), enc]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "exp": now + 300,
            "iat": now,
            "jti": secrets.token_hex(8),
            "iss": ISSUER,
            "aud": [AUDIENCE, "account"],
            "sub": "3f1c-user",
            "typ": "Bearer",
            "azp": "flwr-cli",
            "preferred_username": "researcher",
            "realm_access": {"roles": ["default-roles-flowerfl", ROLE]},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: rsa.RSAPrivateKey | None = None, kid: str | None = None, **overrides: Any) -> str:
        return jwt.encode(
            self.claims(**overrides),
            key or self.key,
            algorithm="RS256",
            headers={"kid": kid or self.kid},
        )


@dataclass
class DeviceGrant:
    approve_after: int = 1  # polls answered authorization_pending before approval
    user: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    outcome: str | None = None  # force "expired_token" / "access_denied" / "slow_down"


class FakeKeycloak:
    """Realm ``flowerfl`` endpoints as an httpx transport handler."""

    def __init__(self, realm: Realm, interval: int = 1) -> None:
        self.realm = realm
        self.interval = interval
        self.devices: dict[str, DeviceGrant] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, list[str]]]] = []
        self.next_user: dict[str, Any] = {}
        self.next_device = DeviceGrant
        self.down = False
        self.jwks_fetches = 0

    # token endpoint helpers
    def _issue(self, user: dict[str, Any]) -> dict[str, Any]:
        refresh = "rt-" + secrets.token_hex(16)
        self.refresh_tokens[refresh] = user
        return {
            "access_token": self.realm.token(**user),
            "expires_in": 300,
            "refresh_expires_in": 1800,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "scope": "openid profile email",
        }

    @staticmethod
    def _error(error: str, description: str = "") -> httpx.Response:
        return httpx.Response(400, json={"error": error, "error_description": description})

    def revoke_all(self) -> None:
        self.refresh_tokens.clear()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        base = "/realms/flowerfl/protocol/openid-connect"
        assert request.url.host == f"auth.{DOMAIN}", request.url
        path = request.url.path
        form = parse_qs(request.content.decode()) if request.method == "POST" else {}
        self.calls.append((path, form))
        if path == f"{base}/certs" and request.method == "GET":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.realm.jwks)
        if path == f"{base}/auth/device" and request.method == "POST":
            if form.get("client_id") != ["flwr-cli"]:
                return httpx.Response(401, json={"error": "invalid_client"})
            code = "dc-" + secrets.token_hex(8)
            grant = self.next_device()
            grant.user = dict(self.next_user)
            self.devices[code] = grant
            return httpx.Response(
                200,
                json={
                    "device_code": code,
                    "user_code": "ABCD-EFGH",
                    "verification_uri": f"https://auth.{DOMAIN}/realms/flowerfl/device",
                    "verification_uri_complete": f"https://auth.{DOMAIN}/realms/flowerfl/device?user_code=ABCD-EFGH",
                    "expires_in": 600,
                    "interval": self.interval,
                },
            )
        if path == f"{base}/token" and request.method == "POST":
            grant_type = (form.get("grant_type") or [""])[0]
            if form.get("client_id") != ["flwr-cli"]:
                return httpx.Response(401, json={"error": "invalid_client"})
            if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                grant = self.devices.get((form.get("device_code") or [""])[0])
                if grant is None:
                    return self._error("invalid_grant", "Device code not valid")
                grant.polls += 1
                if grant.outcome:
                    return self._error(grant.outcome)
                if grant.polls <= grant.approve_after:
                    return self._error("authorization_pending", "The authorization request is still pending")
                del self.devices[(form.get("device_code") or [""])[0]]
                return httpx.Response(200, json=self._issue(grant.user))
            if grant_type == "refresh_token":
                user = self.refresh_tokens.pop((form.get("refresh_token") or [""])[0], None)
                if user is None:
                    return self._error("invalid_grant", "Token is not active")
                return httpx.Response(200, json=self._issue(user))
            return self._error("unsupported_grant_type")
        return httpx.Response(404, json={"error": "not found"})


def make_config(**overrides: Any) -> Config:
    env = {"FL_DOMAIN": DOMAIN, "CTLGATE_CA_FILE": "", "CTLGATE_LISTEN": "127.0.0.1:0"}
    env.update({k: str(v) for k, v in overrides.items()})
    return Config.from_env(env, federation_json=Path("/nonexistent/federation.json"))
