"""check_token / evaluate_token with a locally generated RSA realm key."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from fakekeycloak import AUDIENCE, ISSUER, KID, ROLE, Realm, jwk_of, new_rsa_key
from ctlgate import tokens
from ctlgate.tokens import JwksCache, JwksUnavailable, check_token, evaluate_token, parse_bearer


def check(realm: Realm, token: str | None, **kwargs):
    return check_token(token, realm.jwks, ISSUER, AUDIENCE, ROLE, realm.clock(), **kwargs)


def reason(realm: Realm, token: str | None, **kwargs) -> str:
    return evaluate_token(token, realm.jwks, ISSUER, AUDIENCE, ROLE, realm.clock(), **kwargs).reason


def test_good_token_is_allowed(realm: Realm) -> None:
    token = realm.token()
    assert check(realm, token) == (200, None)
    decision = evaluate_token(token, realm.jwks, ISSUER, AUDIENCE, ROLE, realm.clock())
    assert decision.allowed and decision.username == "researcher"


def test_audience_may_be_a_plain_string(realm: Realm) -> None:
    assert check(realm, realm.token(aud=AUDIENCE)) == (200, None)


def test_missing_token_is_401_bearer(realm: Realm) -> None:
    assert check(realm, None) == (401, "Bearer")
    assert check(realm, "") == (401, "Bearer")
    assert reason(realm, None) == tokens.MISSING_TOKEN


def test_tampered_payload_is_401(realm: Realm) -> None:
    header, payload, signature = realm.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["realm_access"]["roles"].append("admin")
    claims["preferred_username"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    token = f"{header}.{forged}.{signature}"
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.BAD_SIGNATURE


def test_tampered_signature_is_401(realm: Realm) -> None:
    header, payload, signature = realm.token().split(".")
    flipped = ("A" if signature[10] != "A" else "B")
    token = f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"
    assert check(realm, token)[0] == 401


def test_other_key_with_same_kid_is_401(realm: Realm) -> None:
    token = realm.token(key=new_rsa_key())
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.BAD_SIGNATURE


def test_unknown_kid_is_401(realm: Realm) -> None:
    token = realm.token(kid="someone-elses-key")
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.UNKNOWN_KID


def test_expired_token_is_401_plain_bearer_so_the_cli_refreshes(realm: Realm) -> None:
    token = realm.token()
    realm.clock.advance(300)  # exp == now: expired (RFC 7519: now must be before exp)
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.EXPIRED


def test_expired_within_leeway_is_allowed(realm: Realm) -> None:
    token = realm.token()
    realm.clock.advance(305)
    assert check(realm, token)[0] == 401
    assert check(realm, token, leeway=10) == (200, None)


def test_not_yet_valid_is_401(realm: Realm) -> None:
    token = realm.token(nbf=int(realm.clock()) + 120)
    assert reason(realm, token) == tokens.NOT_YET_VALID


def test_token_without_exp_is_401(realm: Realm) -> None:
    token = realm.token(exp=None)
    assert check(realm, token)[0] == 401
    assert reason(realm, token) == tokens.MALFORMED_TOKEN


def test_wrong_issuer_is_401(realm: Realm) -> None:
    token = realm.token(iss="https://auth.fl.test/realms/master")
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.WRONG_ISSUER


def test_wrong_audience_is_401(realm: Realm) -> None:
    token = realm.token(aud=["account", "jupyterhub"])
    assert check(realm, token) == (401, "Bearer")
    assert reason(realm, token) == tokens.WRONG_AUDIENCE
    assert reason(realm, realm.token(aud=None)) == tokens.WRONG_AUDIENCE


def test_id_or_refresh_token_is_401(realm: Realm) -> None:
    assert reason(realm, realm.token(typ="ID")) == tokens.WRONG_TOKEN_TYPE
    assert reason(realm, realm.token(typ="Refresh")) == tokens.WRONG_TOKEN_TYPE


def test_no_role_is_403(realm: Realm) -> None:
    token = realm.token(realm_access={"roles": ["default-roles-flowerfl"]})
    status, challenge = check(realm, token)
    assert status == 403
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert reason(realm, token) == tokens.MISSING_ROLE


def test_no_realm_access_claim_is_403(realm: Realm) -> None:
    assert check(realm, realm.token(realm_access=None))[0] == 403
    assert check(realm, realm.token(realm_access={"roles": "superlink_user"}))[0] == 403


def test_client_role_of_same_name_does_not_count(realm: Realm) -> None:
    token = realm.token(
        realm_access={"roles": []}, resource_access={"ctlgate": {"roles": [ROLE]}}
    )
    assert check(realm, token)[0] == 403


def test_alg_none_is_401(realm: Realm) -> None:
    token = jwt.encode(realm.claims(), None, algorithm="none", headers={"kid": KID})
    assert check(realm, token)[0] == 401
    assert reason(realm, token) == tokens.BAD_ALGORITHM


def test_hs256_with_public_key_as_secret_is_401(realm: Realm) -> None:
    # algorithm confusion: HMAC keyed with the published modulus
    secret = realm.jwks["keys"][0]["n"].encode()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(realm.claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    sig = hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
    token = b".".join([header, payload, base64.urlsafe_b64encode(sig).rstrip(b"=")]).decode()
    assert check(realm, token)[0] == 401
    assert reason(realm, token) == tokens.BAD_ALGORITHM


def test_garbage_is_401(realm: Realm) -> None:
    for garbage in ("abc", "a.b.c", "x" * 20000, "...."):
        assert check(realm, garbage) == (401, "Bearer"), garbage


def test_encryption_key_is_never_used_for_signatures(realm: Realm) -> None:
    token = realm.token(kid="enc-key")
    assert reason(realm, token) == tokens.UNKNOWN_KID


def test_rfc6750_error_attributes_when_enabled(realm: Realm) -> None:
    token = realm.token()
    realm.clock.advance(400)
    status, challenge = check(realm, token, rfc6750_errors=True)
    assert status == 401
    assert challenge.startswith('Bearer error="invalid_token"')
    assert "expired" in challenge
    # no credentials: no error code even in RFC mode (RFC 6750 3.1)
    assert check(realm, None, rfc6750_errors=True) == (401, "Bearer")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc.def.ghi  ", "abc.def.ghi"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bearer(header, expected) -> None:
    assert parse_bearer(header) == expected


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_jwks_cache_refreshes_on_unknown_kid_rate_limited(realm: Realm) -> None:
    fetches: list[int] = []
    current = {"keys": [jwk_of(realm.key, "k1")]}

    def fetch():
        fetches.append(1)
        return current

    clock = FakeTime()
    cache = JwksCache(fetch, ttl=300, min_refresh=10, clock=clock)
    assert "k1" in tokens.signing_keys(cache.get("k1"))
    assert len(fetches) == 1
    cache.get("k1")
    assert len(fetches) == 1  # cached

    # key rotation: a token with a new kid triggers one refresh ...
    current = {"keys": [jwk_of(realm.key, "k2")]}
    clock.t += 11
    assert "k2" in tokens.signing_keys(cache.get("k2"))
    assert len(fetches) == 2
    # ... but made-up kids cannot make it fetch again within min_refresh
    cache.get("bogus")
    cache.get("bogus2")
    assert len(fetches) == 2
    clock.t += 11
    cache.get("bogus")
    assert len(fetches) == 3
    # TTL expiry refreshes without any unknown kid
    clock.t += 301
    cache.get("k2")
    assert len(fetches) == 4


def test_jwks_cache_keeps_old_keys_when_refresh_fails(realm: Realm) -> None:
    state = {"fail": False}

    def fetch():
        if state["fail"]:
            raise OSError("keycloak down")
        return {"keys": [jwk_of(realm.key, "k1")]}

    clock = FakeTime()
    cache = JwksCache(fetch, ttl=300, min_refresh=10, clock=clock)
    cache.get()
    state["fail"] = True
    clock.t += 400
    assert "k1" in tokens.signing_keys(cache.get("k1"))


def test_jwks_cache_without_any_keys_raises() -> None:
    def fetch():
        raise OSError("keycloak down")

    cache = JwksCache(fetch, clock=FakeTime())
    with pytest.raises(JwksUnavailable):
        cache.get()
