"""The three Control API login endpoints, spoken the way flwr 1.42's CLI expects.

Wire format (``flwr/supercore/protobuf/client.py``): ``POST /v1/control/<method>``,
``content-type: application/protobuf``, body the request message serialized; a 2xx
answer is the response message serialized (``application/protobuf``); an error is a
non-2xx JSON ``{"code": <int>, "detail": <str>}`` (flwr's ``FlowerError`` contract,
printed by the CLI as ``[code: N] detail``).

* ``get-login-details`` (``flwr login``): starts Keycloak's device flow and answers
  ``GetLoginDetailsResponse(authn_type="oidc", device_code, verification_uri_complete,
  expires_in, interval)``. ``authn_type`` must be ``"oidc"`` (``AuthnType.OIDC``) or
  the CLI picks its no-op plugin and says authentication is not enabled.
* ``get-auth-tokens``: the CLI polls it every ``interval`` s until ``expires_in``;
  it stops as soon as *both* ``access_token`` and ``refresh_token`` are non-empty, so
  "still pending" is an empty ``GetAuthTokensResponse`` with HTTP 200, and a final
  failure is an HTTP error (the CLI aborts the login with the detail).
* ``refresh-auth-tokens``: called once after a 401 with ``WWW-Authenticate: Bearer``;
  answers ``RefreshAuthTokensResponse(access_token, refresh_token)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError, Message

from flwr.common.constant import AuthnType
from flwr.proto.control_pb2 import (  # pylint: disable=no-name-in-module
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
    RefreshAuthTokensRequest,
    RefreshAuthTokensResponse,
)
from flwr.supercore.error import ApiErrorCode
from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE

from . import oidc
from .tokens import Decision

log = logging.getLogger("ctlgate.control")

GET_LOGIN_DETAILS = "/v1/control/get-login-details"
GET_AUTH_TOKENS = "/v1/control/get-auth-tokens"
REFRESH_AUTH_TOKENS = "/v1/control/refresh-auth-tokens"
LOGIN_PATHS = (GET_LOGIN_DETAILS, GET_AUTH_TOKENS, REFRESH_AUTH_TOKENS)

MAX_BODY = 64 * 1024
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


@dataclass
class HttpResult:
    status: int
    body: bytes
    content_type: str
    outcome: str  # Prometheus label
    headers: list[tuple[str, str]] = field(default_factory=list)


def protobuf_result(message: Message, outcome: str) -> HttpResult:
    return HttpResult(
        200,
        message.SerializeToString(deterministic=True),
        PROTOBUF_MEDIA_TYPE,
        outcome,
        list(NO_STORE),
    )


def error_result(
    status: int,
    code: int,
    detail: str,
    outcome: str,
    headers: list[tuple[str, str]] | None = None,
) -> HttpResult:
    """A flwr ``FlowerError``-shaped JSON error (``FlowerError.from_json`` reads it)."""
    body = json.dumps({"code": int(code), "detail": detail}).encode("utf-8")
    return HttpResult(
        status, body, "application/json", outcome, list(NO_STORE) + list(headers or [])
    )


def _parse(body: bytes, content_type: str | None, message_type: type[Message]) -> Message | HttpResult:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != PROTOBUF_MEDIA_TYPE:
        return error_result(
            415, ApiErrorCode.UNSUPPORTED_CONTENT_TYPE, "Unsupported Content-Type.", "bad_request"
        )
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return error_result(
            400, ApiErrorCode.INVALID_PROTOBUF_PAYLOAD, "Invalid protobuf payload.", "bad_request"
        )
    return message


def _idp_failure(exc: oidc.IdpError) -> HttpResult:
    log.warning("identity provider call failed: %s", exc)
    if exc.outcome == oidc.IDP_UNAVAILABLE:
        return error_result(
            503,
            ApiErrorCode.ACCOUNT_AUTHENTICATION_NOT_INITIALIZED,
            "The identity provider (Keycloak) is unreachable. Try again later.",
            exc.outcome,
        )
    return error_result(
        502,
        ApiErrorCode.ACCOUNT_AUTHENTICATION_NOT_INITIALIZED,
        "The identity provider (Keycloak) refused the request; see the gateway log.",
        exc.outcome,
    )


class LoginEndpoints:
    """Serves the three login paths.

    ``verify`` checks a freshly issued access token with the same rules as
    ``/auth`` (audience, issuer, role), so that a misconfigured realm or an account
    without the role fails at ``flwr login`` with a clear message instead of
    logging in "successfully" and then failing every command.
    """

    def __init__(
        self,
        idp: oidc.KeycloakClient,
        verify: Callable[[str], Decision],
        *,
        role: str,
    ) -> None:
        self._idp = idp
        self._verify = verify
        self._role = role

    def handle(self, path: str, content_type: str | None, body: bytes) -> HttpResult:
        if len(body) > MAX_BODY:
            return error_result(
                413, ApiErrorCode.INVALID_PROTOBUF_PAYLOAD, "Request too large.", "bad_request"
            )
        if path == GET_LOGIN_DETAILS:
            return self.get_login_details(content_type, body)
        if path == GET_AUTH_TOKENS:
            return self.get_auth_tokens(content_type, body)
        if path == REFRESH_AUTH_TOKENS:
            return self.refresh_auth_tokens(content_type, body)
        return error_result(404, 404, "Not found.", "not_found")

    # -- flwr login ----------------------------------------------------------------
    def get_login_details(self, content_type: str | None, body: bytes) -> HttpResult:
        request = _parse(body, content_type, GetLoginDetailsRequest)
        if isinstance(request, HttpResult):
            return request
        try:
            details = self._idp.start_device_authorization()
        except oidc.IdpError as exc:
            return _idp_failure(exc)
        log.info("device login started (user_code %s)", details.user_code)
        return protobuf_result(
            GetLoginDetailsResponse(
                authn_type=AuthnType.OIDC,
                device_code=details.device_code,
                verification_uri_complete=details.verification_uri_complete,
                expires_in=details.expires_in,
                interval=details.interval,
            ),
            "started",
        )

    def _checked_tokens(self, result: oidc.TokenResult) -> tuple[HttpResult | None, str]:
        """(error result if a freshly issued token is unusable else None, username)."""
        if not result.access_token or not result.refresh_token:
            return error_result(
                502,
                ApiErrorCode.ACCOUNT_AUTHENTICATION_NOT_INITIALIZED,
                "Keycloak issued no refresh token for the CLI client; enable refresh "
                "tokens for client flwr-cli.",
                "no_refresh_token",
            ), ""
        decision = self._verify(result.access_token)
        if decision.status == 403:
            log.info("login refused: %s lacks realm role %s", decision.username, self._role)
            return error_result(
                403,
                ApiErrorCode.NO_PERMISSIONS,
                f"Your account has no '{self._role}' realm role: it may not use the "
                "SuperLink Control API. Ask an administrator for access.",
                "missing_role",
            ), decision.username
        if decision.status != 200:
            log.error(
                "Keycloak issued an access token this gateway rejects (%s): check the "
                "realm's issuer/audience mapper configuration",
                decision.reason,
            )
            return error_result(
                502,
                ApiErrorCode.ACCOUNT_AUTHENTICATION_FAILED,
                f"The identity provider issued a token the gateway rejects ({decision.reason}).",
                f"rejected_{decision.reason}",
            ), decision.username
        return None, decision.username

    def get_auth_tokens(self, content_type: str | None, body: bytes) -> HttpResult:
        request = _parse(body, content_type, GetAuthTokensRequest)
        if isinstance(request, HttpResult):
            return request
        if not request.device_code:  # type: ignore[attr-defined]
            return error_result(
                400, ApiErrorCode.INVALID_PROTOBUF_PAYLOAD, "device_code is missing.", "bad_request"
            )
        try:
            result = self._idp.poll_device_token(request.device_code)  # type: ignore[attr-defined]
        except oidc.IdpError as exc:
            return _idp_failure(exc)

        if result.outcome in (oidc.PENDING, oidc.SLOW_DOWN):
            # Empty response: the CLI sleeps `interval` and polls again.
            return protobuf_result(GetAuthTokensResponse(), result.outcome)
        if result.outcome == oidc.ISSUED:
            failure, username = self._checked_tokens(result)
            if failure:
                return failure
            log.info("device login completed for %s", username)
            return protobuf_result(
                GetAuthTokensResponse(
                    access_token=result.access_token, refresh_token=result.refresh_token
                ),
                oidc.ISSUED,
            )
        messages = {
            oidc.EXPIRED: (400, "The login request expired. Run `flwr login` again."),
            oidc.DENIED: (403, "The login was denied in the browser."),
            oidc.INVALID_GRANT: (400, "The login request is not valid (any more). Run `flwr login` again."),
        }
        status, detail = messages.get(
            result.outcome, (502, "The identity provider refused the login; see the gateway log.")
        )
        log.info("device login failed: %s %s", result.error, result.error_description)
        return error_result(status, ApiErrorCode.ACCOUNT_AUTHENTICATION_FAILED, detail, result.outcome)

    # -- silent refresh after a 401 --------------------------------------------------
    def refresh_auth_tokens(self, content_type: str | None, body: bytes) -> HttpResult:
        request = _parse(body, content_type, RefreshAuthTokensRequest)
        if isinstance(request, HttpResult):
            return request
        refresh_token = request.refresh_token  # type: ignore[attr-defined]
        challenge = [("WWW-Authenticate", "Bearer")]
        if not refresh_token:
            return error_result(
                401,
                ApiErrorCode.ACCOUNT_AUTHENTICATION_FAILED,
                "Refresh token is missing. Run `flwr login`.",
                "bad_request",
                challenge,
            )
        try:
            result = self._idp.refresh(refresh_token)
        except oidc.IdpError as exc:
            return _idp_failure(exc)
        if result.outcome == oidc.ISSUED:
            if not result.refresh_token:
                # Keycloak may keep the refresh token (no rotation): reuse it.
                result = oidc.TokenResult(oidc.ISSUED, result.access_token, refresh_token)
            failure, username = self._checked_tokens(result)
            if failure:
                return failure
            log.info("tokens refreshed for %s", username)
            return protobuf_result(
                RefreshAuthTokensResponse(
                    access_token=result.access_token, refresh_token=result.refresh_token
                ),
                "refreshed",
            )
        if result.outcome == oidc.IDP_ERROR:
            log.warning("token refresh failed: %s %s", result.error, result.error_description)
            return error_result(
                502,
                ApiErrorCode.ACCOUNT_AUTHENTICATION_NOT_INITIALIZED,
                "The identity provider refused the refresh; see the gateway log.",
                result.outcome,
            )
        # invalid_grant: session expired, logged out, or token revoked.
        log.info("token refresh refused: %s %s", result.error, result.error_description)
        return error_result(
            401,
            ApiErrorCode.ACCOUNT_AUTHENTICATION_FAILED,
            "Your session expired. Run `flwr login` again.",
            "session_expired",
            challenge,
        )
