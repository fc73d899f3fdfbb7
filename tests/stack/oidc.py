"""A person at Keycloak's login pages, played by an HTTP client that follows the real
forms (login, then consent for the device flow), through the edge."""
from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx

from fedops.signin import form_action, submit_login  # noqa: F401 - the tests' names


def realm_url(stack) -> str:
    return f"{stack.url('auth')}/realms/flowerfl"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_code_login(stack, http: httpx.Client, client_id: str, redirect_uri: str,
                             username: str, password: str) -> dict:
    """The browser's authorization-code flow with PKCE; returns the token response."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code",
              "scope": "openid", "state": state, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    page = http.get(f"{realm_url(stack)}/protocol/openid-connect/auth?{urlencode(params)}")
    assert page.status_code == 200, page.text[:300]
    done = submit_login(http, page, username, password)
    assert done.status_code == 302, f"login did not redirect: {done.status_code} {done.text[:300]}"
    location = done.headers["location"]
    assert location.startswith(redirect_uri), location
    query = parse_qs(urlparse(location).query)
    assert query["state"] == [state]
    secret = stack.secret(f"oidc_{client_id}_secret")
    token = http.post(f"{realm_url(stack)}/protocol/openid-connect/token",
                      data={"grant_type": "authorization_code", "code": query["code"][0],
                            "redirect_uri": redirect_uri, "code_verifier": verifier},
                      auth=(client_id, secret))
    assert token.status_code == 200, token.text
    return token.json()


def approve_device(stack, http: httpx.Client, verification_uri: str, username: str, password: str) -> str:
    """Open the device verification URL as the user would, log in, grant consent."""
    page = http.get(verification_uri, follow_redirects=True)
    if 'id="kc-form-login"' not in page.text:      # the user-code form comes first
        page = http.post(urljoin(str(page.url), form_action(page.text)), data={"device_user_code": parse_qs(
            urlparse(verification_uri).query).get("user_code", [""])[0]}, follow_redirects=True)
    page = submit_login(http, page, username, password)
    if page.status_code in (302, 303):
        page = http.get(page.headers["location"], follow_redirects=True)
    if "accept" in page.text and "kc-login" in page.text or "oauth-grant" in page.text:
        page = http.post(urljoin(str(page.url), form_action(page.text)), data={"accept": "Yes"},
                         follow_redirects=True)
    return page.text


def device_flow_tokens(stack, username: str, password: str, client_id: str = "flwr-cli") -> dict:
    """The OAuth 2.0 device authorization grant, as `flwr login` drives it."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca)), timeout=30) as api, \
         httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca)), timeout=30) as browser:
        start = api.post(f"{realm_url(stack)}/protocol/openid-connect/auth/device",
                         data={"client_id": client_id, "scope": "openid"})
        assert start.status_code == 200, start.text
        grant = start.json()
        approve_device(stack, browser, grant["verification_uri_complete"], username, password)
        deadline = time.time() + 60
        while time.time() < deadline:
            token = api.post(f"{realm_url(stack)}/protocol/openid-connect/token",
                             data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                   "device_code": grant["device_code"], "client_id": client_id})
            if token.status_code == 200:
                return token.json()
            assert token.json().get("error") in ("authorization_pending", "slow_down"), token.text
            time.sleep(grant.get("interval", 5))
        raise AssertionError("the device grant was not approved within 60 s")
