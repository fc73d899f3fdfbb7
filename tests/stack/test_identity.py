"""Keycloak behind the edge (task list 3.2, 7.1): OIDC discovery, real logins, what is
not public."""
import httpx
import jwt
import pytest

import oidc
from edge import client


@pytest.fixture(scope="module")
def passwords(stack):
    import json
    return json.loads(stack.secret("keycloak_users"))


def test_keycloak_is_healthy(stack):
    from fedops import stack as stack_ops
    stack_ops.wait_healthy(["keycloak"], timeout=60)


def test_discovery_is_served_at_the_public_url(stack):
    with client(stack) as http:
        conf = http.get(f"{oidc.realm_url(stack)}/.well-known/openid-configuration").json()
    assert conf["issuer"] == f"{stack.url('auth')}/realms/flowerfl"
    assert conf["device_authorization_endpoint"].startswith(conf["issuer"])
    assert "S256" in conf["code_challenge_methods_supported"]


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Host": "evil.example.org"},
    {"X-Forwarded-Host": "evil.example.org", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "8080"},
    {"Forwarded": "host=evil.example.org;proto=http"},
])
def test_spoofed_forwarding_headers_never_change_the_issuer(stack, headers):
    with client(stack) as http:
        conf = http.get(f"{oidc.realm_url(stack)}/.well-known/openid-configuration", headers=headers).json()
    assert conf["issuer"] == f"{stack.url('auth')}/realms/flowerfl"


def test_a_spoofed_host_header_gets_no_keycloak(stack):
    """TLS for auth.<domain> with Host: evil.example.org: the edge closes (or refuses)."""
    with client(stack) as http:
        try:
            r = http.get(f"{oidc.realm_url(stack)}/.well-known/openid-configuration",
                         headers={"Host": "evil.example.org"})
        except httpx.RemoteProtocolError:
            return
    assert r.status_code in (400, 421) and "evil.example.org" not in r.text


@pytest.mark.parametrize("path", ["/admin/", "/admin/master/console/", "/admin/realms/flowerfl/users",
                                  "/metrics", "/health", "/health/ready", "/realms/master/"])
def test_admin_metrics_and_health_are_not_public(stack, path):
    with client(stack) as http:
        r = http.get(f"{stack.url('auth')}{path}")
    assert r.status_code == 404


def test_admin_console_answers_on_the_administration_address_only(stack):
    """Keycloak's own TLS, passed through by the edge on the administration address
    (FL_ADMIN_BIND_ADDRESS, 127.0.0.1 by default), not on the public one."""
    port = stack.setting("FL_KEYCLOAK_ADMIN_PORT")
    r = httpx.get(f"https://localhost:{port}/admin/master/console/", timeout=30,
                  verify=__import__("ssl").create_default_context(cafile=str(stack.ca)))
    assert r.status_code == 200
    published = stack.compose("port", "nginx", "8443").stdout.strip()
    assert published == f"{stack.setting('FL_ADMIN_BIND_ADDRESS')}:{port}"
    assert stack.compose("port", "keycloak", "8443", check=False).returncode != 0   # not published itself


def verify(stack, token: str, audience: str | None = None) -> dict:
    jwks = jwt.PyJWKClient(f"{oidc.realm_url(stack)}/protocol/openid-connect/certs",
                           ssl_context=__import__("ssl").create_default_context(cafile=str(stack.ca)))
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256", "PS256"],
                      issuer=f"{stack.url('auth')}/realms/flowerfl",
                      audience=audience, options={"verify_aud": audience is not None})


def test_authorization_code_flow_with_pkce_through_the_edge(stack, passwords):
    with client(stack) as http:
        tokens = oidc.authorization_code_login(
            stack, http, "jupyterhub", f"{stack.url('hub')}/hub/oauth_callback",
            "researcher", passwords["researcher"])
    claims = verify(stack, tokens["id_token"], audience="jupyterhub")
    assert claims["preferred_username"] == "researcher"
    access = verify(stack, tokens["access_token"])
    assert "jupyter_user" in access["realm_access"]["roles"]


def test_a_wrong_password_is_refused(stack):
    with client(stack) as http:
        verifier, challenge = oidc.pkce_pair()
        page = http.get(f"{oidc.realm_url(stack)}/protocol/openid-connect/auth", params={
            "client_id": "jupyterhub", "response_type": "code", "scope": "openid",
            "redirect_uri": f"{stack.url('hub')}/hub/oauth_callback",
            "code_challenge": challenge, "code_challenge_method": "S256"})
        done = oidc.submit_login(http, page, "researcher", "wrong-password")
    assert done.status_code == 200 and "Invalid username or password" in done.text


def test_redirect_uris_are_exact(stack):
    with client(stack) as http:
        r = http.get(f"{oidc.realm_url(stack)}/protocol/openid-connect/auth", params={
            "client_id": "jupyterhub", "response_type": "code", "scope": "openid",
            "redirect_uri": f"{stack.url('hub')}/hub/oauth_callback/../evil"})
    assert r.status_code == 400 and "Invalid parameter: redirect_uri" in r.text


def test_device_flow_as_flwr_login_does_it(stack, passwords):
    tokens = oidc.device_flow_tokens(stack, "researcher", passwords["researcher"])
    claims = verify(stack, tokens["access_token"], audience="ctlgate")
    assert "superlink_user" in claims["realm_access"]["roles"]
    assert claims["azp"] == "flwr-cli"


def test_a_user_without_the_superlink_group_has_no_superlink_role(stack, passwords):
    tokens = oidc.device_flow_tokens(stack, "observer", passwords["observer"])
    assert "superlink_user" not in verify(stack, tokens["access_token"])["realm_access"]["roles"]
