"""Access-token checks: pure functions plus a small JWKS cache.

``check_token`` is the whole decision for NGINX ``auth_request``:

* 200: signature verifies against the realm's JWKS, ``iss`` is the realm, ``aud``
  contains the gateway's audience, ``exp`` has not passed, and ``realm_access.roles``
  holds the required realm role;
* 401 (``WWW-Authenticate: Bearer``): no token, or any of the above except the role;
* 403: a valid token without the role.

About the 401 challenge: RFC 6750 section 3.1 says a rejected token SHOULD be
answered with ``Bearer error="invalid_token"``. flwr 1.42's CLI, however, refreshes
its tokens only when the header is *exactly* ``Bearer``
(``flwr/cli/cli_account_auth_interceptor.py``: ``response.headers.get(
"WWW-Authenticate") != "Bearer"``) -- and so does flwr's own SuperLink
(``supercore/error/catalog.py``). The default therefore answers plain ``Bearer``;
``rfc6750_errors=True`` adds the error attributes for other clients, at the price of
breaking the CLI's silent refresh. 403 always carries ``error="insufficient_scope"``
(the CLI never refreshes on 403).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidSignatureError, PyJWTError

log = logging.getLogger("ctlgate.tokens")

# Asymmetric algorithms only: never "none" nor HMAC (a public JWK used as an HMAC
# secret is the classic algorithm-confusion attack).
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
MAX_TOKEN_LENGTH = 16 * 1024

# Reasons (also the Prometheus label values of the deny counter).
OK = "ok"
MISSING_TOKEN = "missing_token"
MALFORMED_TOKEN = "malformed_token"
BAD_ALGORITHM = "bad_algorithm"
UNKNOWN_KID = "unknown_kid"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
WRONG_ISSUER = "wrong_issuer"
WRONG_AUDIENCE = "wrong_audience"
WRONG_TOKEN_TYPE = "wrong_token_type"
MISSING_ROLE = "missing_role"
JWKS_UNAVAILABLE = "jwks_unavailable"

_RFC6750_DESCRIPTIONS = {
    MALFORMED_TOKEN: "The access token is malformed",
    BAD_ALGORITHM: "The access token uses an unsupported algorithm",
    UNKNOWN_KID: "The access token was signed by an unknown key",
    BAD_SIGNATURE: "The access token signature is invalid",
    EXPIRED: "The access token expired",
    NOT_YET_VALID: "The access token is not valid yet",
    WRONG_ISSUER: "The access token was issued by another issuer",
    WRONG_AUDIENCE: "The access token is not meant for this service",
    WRONG_TOKEN_TYPE: "The token is not an access token",
}


@dataclass(frozen=True)
class Decision:
    """Outcome of one token check."""

    status: int  # 200, 401, 403 (503 only from the service layer: JWKS unavailable)
    reason: str
    www_authenticate: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def username(self) -> str:
        return str(self.claims.get("preferred_username") or self.claims.get("sub") or "")


def parse_bearer(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _challenge(reason: str, rfc6750_errors: bool) -> str:
    if not rfc6750_errors or reason == MISSING_TOKEN:
        # RFC 6750 3.1: no error code when the request carried no credentials.
        return "Bearer"
    desc = _RFC6750_DESCRIPTIONS.get(reason, "The access token is invalid")
    return f'Bearer error="invalid_token", error_description="{desc}"'


def _deny(reason: str, rfc6750_errors: bool, claims: Mapping[str, Any] | None = None) -> Decision:
    return Decision(401, reason, _challenge(reason, rfc6750_errors), dict(claims or {}))


def signing_keys(jwks: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Map kid -> JWK for the signature keys of a JWKS document."""
    keys: dict[str, dict[str, Any]] = {}
    if not isinstance(jwks, Mapping):
        return keys
    for jwk in jwks.get("keys") or []:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if jwk.get("use", "sig") != "sig":  # Keycloak also publishes RSA-OAEP enc keys
            continue
        if jwk.get("kty") not in {"RSA", "EC"}:
            continue
        keys[kid] = dict(jwk)
    return keys


def token_kid(token: str) -> str | None:
    """The ``kid`` of a token's header, or None if it cannot be read."""
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def evaluate_token(  # noqa: PLR0911, PLR0912  (a flat list of checks reads best)
    token: str | None,
    jwks: Mapping[str, Any] | None,
    issuer: str,
    audience: str,
    role: str | tuple[str, ...],
    now: float,
    *,
    leeway: float = 0.0,
    rfc6750_errors: bool = False,
) -> Decision:
    """Check an access token completely; see the module docstring for the rules.
    ``role``: the realm role required, or a tuple of roles of which one suffices."""
    wanted = (role,) if isinstance(role, str) else tuple(role)
    if not token:
        return _deny(MISSING_TOKEN, rfc6750_errors)
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return _deny(MALFORMED_TOKEN, rfc6750_errors)

    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        return _deny(MALFORMED_TOKEN, rfc6750_errors)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        return _deny(BAD_ALGORITHM, rfc6750_errors)

    jwk = signing_keys(jwks).get(header.get("kid"))  # type: ignore[arg-type]
    if jwk is None:
        return _deny(UNKNOWN_KID, rfc6750_errors)
    if jwk.get("alg") and jwk["alg"] != alg:
        return _deny(BAD_ALGORITHM, rfc6750_errors)
    if jwk["kty"] != ("EC" if alg.startswith("ES") else "RSA"):
        return _deny(BAD_ALGORITHM, rfc6750_errors)

    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
        # Signature only; every claim is checked below against the injected clock
        # so that the rules (and the tests) do not depend on the wall clock.
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": [],
            },
        )
    except InvalidSignatureError:
        return _deny(BAD_SIGNATURE, rfc6750_errors)
    except PyJWTError as exc:
        log.debug("token rejected by PyJWT: %s", exc)
        return _deny(MALFORMED_TOKEN, rfc6750_errors)
    if not isinstance(claims, dict):
        return _deny(MALFORMED_TOKEN, rfc6750_errors)

    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return _deny(MALFORMED_TOKEN, rfc6750_errors, claims)
    if now >= exp + leeway:
        return _deny(EXPIRED, rfc6750_errors, claims)
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and not isinstance(nbf, bool) and now + leeway < nbf:
        return _deny(NOT_YET_VALID, rfc6750_errors, claims)

    if claims.get("iss") != issuer:
        return _deny(WRONG_ISSUER, rfc6750_errors, claims)

    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in auds:
        return _deny(WRONG_AUDIENCE, rfc6750_errors, claims)

    # Keycloak marks access tokens typ=Bearer (ID tokens "ID", refresh "Refresh").
    typ = claims.get("typ")
    if typ is not None and str(typ).lower() != "bearer":
        return _deny(WRONG_TOKEN_TYPE, rfc6750_errors, claims)

    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
    if not isinstance(roles, list) or not any(r in roles for r in wanted):
        return Decision(
            403,
            MISSING_ROLE,
            f'Bearer error="insufficient_scope", error_description='
            f'"The realm role {" or ".join(wanted)} is required"',
            claims,
        )
    return Decision(200, OK, None, claims)


def check_token(
    token: str | None,
    jwks: Mapping[str, Any] | None,
    issuer: str,
    audience: str,
    role: str | tuple[str, ...],
    now: float,
    *,
    leeway: float = 0.0,
    rfc6750_errors: bool = False,
) -> tuple[int, str | None]:
    """``(status, WWW-Authenticate value or None)`` for one access token."""
    decision = evaluate_token(
        token, jwks, issuer, audience, role, now, leeway=leeway, rfc6750_errors=rfc6750_errors
    )
    return decision.status, decision.www_authenticate


class JwksUnavailable(RuntimeError):
    """The JWKS could not be fetched and no earlier copy is cached."""


class JwksCache:
    """The realm's JWKS, cached for ``ttl`` seconds and refreshed on an unknown kid.

    ``fetch`` returns the parsed JWKS document (a dict). A refresh forced by an
    unknown kid happens at most once every ``min_refresh`` seconds, so tokens with
    made-up kids cannot turn the gateway into a load generator against Keycloak.
    A failed refresh keeps serving the previous keys.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        ttl: float = 300.0,
        min_refresh: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._clock = clock
        self._on_fetch = on_fetch or (lambda outcome: None)
        self._lock = threading.Lock()
        self._jwks: Mapping[str, Any] | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, success or not

    def _refresh_locked(self) -> None:
        self._attempted_at = self._clock()
        try:
            jwks = self._fetch()
            if not signing_keys(jwks):
                raise ValueError("JWKS has no RSA/EC signature keys")
        except Exception as exc:  # noqa: BLE001 -- any failure keeps the old keys
            self._on_fetch("error")
            log.warning("JWKS refresh failed: %s", exc)
            return
        self._jwks = jwks
        self._fetched_at = self._attempted_at
        self._on_fetch("ok")
        log.info("JWKS refreshed: kids=%s", sorted(signing_keys(jwks)))

    def get(self, kid: str | None = None) -> Mapping[str, Any]:
        """The JWKS, refreshed if stale or if ``kid`` is unknown (rate limited)."""
        with self._lock:
            now = self._clock()
            may_retry = (
                self._attempted_at is None or now - self._attempted_at >= self._min_refresh
            )
            stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
            unknown = kid is not None and kid not in signing_keys(self._jwks)
            if (stale or unknown) and may_retry:
                self._refresh_locked()
            if self._jwks is None:
                raise JwksUnavailable("the realm's JWKS could not be fetched")
            return self._jwks


def fetch_json(client: Any, url: str) -> dict[str, Any]:
    """GET a JSON document with an httpx client (raises on non-2xx)."""
    response = client.get(url, headers={"accept": "application/json"})
    if response.status_code != 200:
        raise ValueError(f"GET {url}: HTTP {response.status_code}")
    data = json.loads(response.content)
    if not isinstance(data, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return data
