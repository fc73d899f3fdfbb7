"""Protobuf request/response handling of the three login endpoints."""

from __future__ import annotations

import json

import httpx
import pytest

from fakekeycloak import ROLE, DeviceGrant, FakeKeycloak, Realm
from ctlgate.control import GET_AUTH_TOKENS, GET_LOGIN_DETAILS, REFRESH_AUTH_TOKENS
from flwr.common.constant import AuthnType
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
    RefreshAuthTokensRequest,
    RefreshAuthTokensResponse,
)
from flwr.supercore.error import FlowerError

PB = "application/protobuf"


def call(gateway, path, message, content_type=PB):
    return gateway.login.handle(path, content_type, message.SerializeToString())


def login_details(gateway) -> GetLoginDetailsResponse:
    result = call(gateway, GET_LOGIN_DETAILS, GetLoginDetailsRequest())
    assert result.status == 200, result.body
    assert result.content_type == PB
    response = GetLoginDetailsResponse()
    response.ParseFromString(result.body)
    return response


def flower_error(result) -> FlowerError:
    error = FlowerError.from_json(result.body.decode())
    assert error is not None, result.body
    return error


def test_get_login_details_starts_device_flow(gateway, keycloak: FakeKeycloak) -> None:
    response = login_details(gateway)
    assert response.authn_type == AuthnType.OIDC == "oidc"
    assert response.device_code.startswith("dc-")
    assert response.verification_uri_complete.endswith("/realms/flowerfl/device?user_code=ABCD-EFGH")
    assert response.expires_in == 600
    assert response.interval == 1
    path, form = keycloak.calls[-1]
    assert path.endswith("/protocol/openid-connect/auth/device")
    assert form["client_id"] == ["flwr-cli"] and form["scope"] == ["openid"]
    result = call(gateway, GET_LOGIN_DETAILS, GetLoginDetailsRequest())
    assert ("Cache-Control", "no-store") in result.headers


def test_get_auth_tokens_pending_then_issued(gateway, keycloak: FakeKeycloak, realm: Realm) -> None:
    keycloak.next_device = lambda: DeviceGrant(approve_after=2)
    code = login_details(gateway).device_code
    for _ in range(2):
        result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
        assert result.status == 200 and result.outcome == "pending"
        pending = GetAuthTokensResponse()
        pending.ParseFromString(result.body)
        assert not pending.access_token and not pending.refresh_token
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
    assert result.status == 200 and result.outcome == "issued"
    tokens = GetAuthTokensResponse()
    tokens.ParseFromString(result.body)
    assert tokens.refresh_token.startswith("rt-")
    assert gateway.verify(tokens.access_token).allowed
    _, form = [c for c in keycloak.calls if c[0].endswith("/token")][-1]
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:device_code"]
    assert form["device_code"] == [code]


def test_slow_down_is_treated_as_pending(gateway, keycloak: FakeKeycloak) -> None:
    keycloak.next_device = lambda: DeviceGrant(outcome="slow_down")
    code = login_details(gateway).device_code
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
    assert result.status == 200 and result.body == b""


@pytest.mark.parametrize(
    ("outcome", "status", "words"),
    [("expired_token", 400, "expired"), ("access_denied", 403, "denied")],
)
def test_final_device_errors_stop_the_cli(gateway, keycloak, outcome, status, words) -> None:
    keycloak.next_device = lambda: DeviceGrant(outcome=outcome)
    code = login_details(gateway).device_code
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
    assert result.status == status
    assert words in flower_error(result).message


def test_unknown_device_code(gateway) -> None:
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code="nope"))
    assert result.status == 400 and flower_error(result).code == 36


def test_account_without_role_fails_at_login(gateway, keycloak: FakeKeycloak) -> None:
    keycloak.next_user = {"realm_access": {"roles": ["default-roles-flowerfl"]}}
    keycloak.next_device = lambda: DeviceGrant(approve_after=0)
    code = login_details(gateway).device_code
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
    assert result.status == 403
    error = flower_error(result)
    assert error.code == 9 and ROLE in error.message


def test_misconfigured_audience_fails_at_login(gateway, keycloak: FakeKeycloak) -> None:
    keycloak.next_user = {"aud": "account"}
    keycloak.next_device = lambda: DeviceGrant(approve_after=0)
    code = login_details(gateway).device_code
    result = call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code))
    assert result.status == 502 and "wrong_audience" in flower_error(result).message


def test_refresh_auth_tokens(gateway, keycloak: FakeKeycloak, realm: Realm) -> None:
    keycloak.next_device = lambda: DeviceGrant(approve_after=0)
    code = login_details(gateway).device_code
    first = GetAuthTokensResponse()
    first.ParseFromString(call(gateway, GET_AUTH_TOKENS, GetAuthTokensRequest(device_code=code)).body)
    realm.clock.advance(400)
    assert gateway.verify(first.access_token).reason == "expired"

    result = call(gateway, REFRESH_AUTH_TOKENS, RefreshAuthTokensRequest(refresh_token=first.refresh_token))
    assert result.status == 200, result.body
    refreshed = RefreshAuthTokensResponse()
    refreshed.ParseFromString(result.body)
    assert refreshed.access_token != first.access_token
    assert refreshed.refresh_token and refreshed.refresh_token != first.refresh_token
    assert gateway.verify(refreshed.access_token).allowed
    _, form = [c for c in keycloak.calls if c[0].endswith("/token")][-1]
    assert form["grant_type"] == ["refresh_token"] and form["client_id"] == ["flwr-cli"]

    # the old refresh token was rotated away: the session is over
    result = call(gateway, REFRESH_AUTH_TOKENS, RefreshAuthTokensRequest(refresh_token=first.refresh_token))
    assert result.status == 401
    assert ("WWW-Authenticate", "Bearer") in result.headers
    assert "flwr login" in flower_error(result).message


def test_refresh_without_token(gateway) -> None:
    result = call(gateway, REFRESH_AUTH_TOKENS, RefreshAuthTokensRequest())
    assert result.status == 401 and flower_error(result).code == 36


def test_keycloak_unreachable_is_503_with_detail(gateway, keycloak: FakeKeycloak) -> None:
    keycloak.down = True
    result = call(gateway, GET_LOGIN_DETAILS, GetLoginDetailsRequest())
    assert result.status == 503
    assert "unreachable" in flower_error(result).message


def test_wrong_content_type_is_415(gateway) -> None:
    result = call(gateway, GET_LOGIN_DETAILS, GetLoginDetailsRequest(), content_type="application/json")
    assert result.status == 415 and flower_error(result).code == 1002


def test_invalid_protobuf_is_400(gateway) -> None:
    result = gateway.login.handle(GET_AUTH_TOKENS, PB, b"\xff\xff\xff")
    assert result.status == 400 and flower_error(result).code == 1003


def test_error_body_is_flower_error_json(gateway) -> None:
    result = gateway.login.handle(GET_AUTH_TOKENS, "text/plain", b"")
    payload = json.loads(result.body)
    assert set(payload) == {"code", "detail"}


def test_device_response_without_complete_uri(config, realm: Realm) -> None:
    from ctlgate.oidc import KeycloakClient

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "device_code": "dc",
                "user_code": "WXYZ-1234",
                "verification_uri": "https://auth.fl.test/realms/flowerfl/device",
                "expires_in": 300,
            },
        )

    client = KeycloakClient(
        httpx.Client(transport=httpx.MockTransport(handler)),
        device_url=config.device_url,
        token_url=config.token_url,
        client_id="flwr-cli",
    )
    details = client.start_device_authorization()
    assert details.verification_uri_complete.endswith("/device?user_code=WXYZ-1234")
    assert details.interval == 5  # RFC 8628 default
