"""Keycloak back-channel calls: OAuth 2.0 device authorization (RFC 8628) and the
token endpoint (device_code and refresh_token grants) for the public client
``flwr-cli``.

Keycloak's answers (``DeviceGrantType.java``): while the user has not finished in the
browser the token endpoint answers HTTP 400 with ``error`` ``authorization_pending``
or ``slow_down``; afterwards ``expired_token``, ``access_denied`` or
``invalid_grant`` are final.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

log = logging.getLogger("ctlgate.oidc")

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# Outcomes of a token-endpoint call (also Prometheus label values).
ISSUED = "issued"
PENDING = "pending"
SLOW_DOWN = "slow_down"
EXPIRED = "expired_token"
DENIED = "access_denied"
INVALID_GRANT = "invalid_grant"
IDP_ERROR = "idp_error"
IDP_UNAVAILABLE = "idp_unavailable"


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class TokenResult:
    outcome: str
    access_token: str = ""
    refresh_token: str = ""
    error: str = ""
    error_description: str = ""


class IdpError(RuntimeError):
    """Keycloak could not be reached or refused a request."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _positive_int(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


class KeycloakClient:
    """Calls the realm's device and token endpoints for the public CLI client."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        device_url: str,
        token_url: str,
        client_id: str,
        scope: str = "openid",
    ) -> None:
        self._http = http
        self._device_url = device_url
        self._token_url = token_url
        self._client_id = client_id
        self._scope = scope

    def _post_form(self, url: str, form: dict[str, str]) -> httpx.Response:
        try:
            return self._http.post(
                url,
                content=urlencode(form).encode("ascii"),
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise IdpError(IDP_UNAVAILABLE, f"{url}: {type(exc).__name__}: {exc}") from None

    def start_device_authorization(self) -> DeviceAuthorization:
        """POST .../auth/device: start a device login for the CLI client."""
        form = {"client_id": self._client_id}
        if self._scope:
            form["scope"] = self._scope
        response = self._post_form(self._device_url, form)
        data = _json(response)
        if response.status_code != 200:
            error = str(data.get("error") or f"HTTP {response.status_code}")
            raise IdpError(
                IDP_ERROR,
                f"device authorization refused: {error}: {data.get('error_description', '')}",
            )
        device_code = data.get("device_code")
        user_code = data.get("user_code")
        verification_uri = data.get("verification_uri")
        if not (isinstance(device_code, str) and device_code and isinstance(verification_uri, str)):
            raise IdpError(IDP_ERROR, "device authorization response lacks device_code")
        complete = data.get("verification_uri_complete")
        if not isinstance(complete, str) or not complete:
            # verification_uri_complete is OPTIONAL in RFC 8628; Keycloak sends it.
            sep = "&" if "?" in verification_uri else "?"
            complete = f"{verification_uri}{sep}{urlencode({'user_code': user_code or ''})}"
        return DeviceAuthorization(
            device_code=device_code,
            user_code=str(user_code or ""),
            verification_uri=verification_uri,
            verification_uri_complete=complete,
            expires_in=_positive_int(data.get("expires_in"), 600),
            interval=_positive_int(data.get("interval"), 5),  # RFC 8628 3.2 default
        )

    def _token_grant(self, form: dict[str, str]) -> TokenResult:
        response = self._post_form(self._token_url, form)
        data = _json(response)
        if response.status_code == 200:
            return TokenResult(
                ISSUED,
                access_token=str(data.get("access_token") or ""),
                refresh_token=str(data.get("refresh_token") or ""),
            )
        error = str(data.get("error") or "")
        description = str(data.get("error_description") or "")
        outcome = {
            "authorization_pending": PENDING,
            "slow_down": SLOW_DOWN,
            "expired_token": EXPIRED,
            "access_denied": DENIED,
            "invalid_grant": INVALID_GRANT,
        }.get(error)
        if outcome is None or response.status_code >= 500:
            outcome = IDP_ERROR
            error = error or f"HTTP {response.status_code}"
        return TokenResult(outcome, error=error, error_description=description)

    def poll_device_token(self, device_code: str) -> TokenResult:
        """POST .../token with the device_code grant."""
        return self._token_grant(
            {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "client_id": self._client_id}
        )

    def refresh(self, refresh_token: str) -> TokenResult:
        """POST .../token with the refresh_token grant."""
        return self._token_grant(
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self._client_id}
        )
