"""JupyterHub at hub.<domain>: Keycloak login through the edge (no browser), the group
rule, the filtering Docker API proxy, notebook servers on the notebooks network."""
from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from urllib.parse import urljoin

import httpx
import pytest

import kcadmin
from oidc import submit_login


def tls(stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca))


def password(stack, username: str) -> str:
    return json.loads(stack.secret("keycloak_users"))[username]


def hub_login(stack, username: str, pw: str | None = None) -> tuple[httpx.Client, httpx.Response]:
    """Sign in at the hub as a browser would: the hub sends us to Keycloak (through the
    edge), we submit the login form, Keycloak sends us back to the hub's callback.
    Returns the client (with the hub's cookies) and the callback's answer."""
    http = httpx.Client(verify=tls(stack), timeout=60)
    hub = stack.url("hub")
    start = http.get(f"{hub}/hub/oauth_login")
    assert start.status_code == 302, start.text[:300]
    location = start.headers["location"]
    assert location.startswith(stack.url("auth") + "/realms/flowerfl/"), location
    assert "code_challenge=" in location and "code_challenge_method=S256" in location   # PKCE
    page = http.get(location)
    assert page.status_code == 200, page.text[:300]
    done = submit_login(http, page, username, pw or password(stack, username))
    assert done.status_code == 302, done.text[:300]
    callback = done.headers["location"]
    assert callback.startswith(f"{hub}/hub/oauth_callback"), callback
    return http, http.get(callback)


def xsrf(http: httpx.Client) -> dict:
    token = next((c.value for c in http.cookies.jar if c.name == "_xsrf"), "")
    return {"X-XSRFToken": token} if token else {}


@pytest.fixture(scope="module")
def researcher(stack):
    http, answer = hub_login(stack, "researcher")
    assert answer.status_code == 302, answer.text[:500]
    yield http
    http.close()


def test_the_hub_is_served_through_the_edge_reencrypted(stack):
    with httpx.Client(verify=tls(stack), timeout=30) as http:
        health = http.get(f"{stack.url('hub')}/hub/health")
        assert health.status_code == 200
        login = http.get(f"{stack.url('hub')}/hub/login")
        assert login.status_code == 200 and "oauth_login" in login.text
    # The edge talks TLS to the hub's proxy, verified against the project CA.
    conf = stack.exec("nginx", "cat /tmp/nginx/nginx.conf").stdout
    block = conf[conf.index(f"server_name {stack.hostname('hub')};"):]
    block = block[:block.index("\n    }\n")]
    assert "proxy_pass https://$jupyterhub_upstream" in block and "proxy_ssl_verify on" in block


def test_a_member_of_jupyter_users_signs_in(stack, researcher):
    user = researcher.get(f"{stack.url('hub')}/hub/api/user", headers=xsrf(researcher))
    assert user.status_code == 200, user.text
    body = user.json()
    assert body["name"] == "researcher" and body["admin"] is False
    assert "jupyter_users" in body.get("groups", [])


def test_a_member_of_jupyter_admins_is_an_admin(stack):
    http, answer = hub_login(stack, "hubadmin")
    if True:  # the client closes at the end of the test
        assert answer.status_code == 302, answer.text[:500]
        me = http.get(f"{stack.url('hub')}/hub/api/user", headers=xsrf(http)).json()
        assert me["name"] == "hubadmin" and me["admin"] is True


def test_a_user_outside_the_groups_gets_a_clear_page(stack):
    username, pw = f"outsider{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    with kcadmin.admin_client(stack) as admin:
        made = admin.post("/users", json={
            "username": username, "enabled": True, "email": f"{username}@example.org",
            "emailVerified": True, "firstName": "Out", "lastName": "Sider",
            "credentials": [{"type": "password", "value": pw, "temporary": False}]})
        assert made.status_code == 201, made.text
    http, answer = hub_login(stack, username, pw)
    if True:  # the client closes at the end of the test
        assert answer.status_code == 403
        assert "No access to the notebooks" in answer.text and "jupyter_users" in answer.text
        assert "Traceback" not in answer.text


def test_the_hubs_database_is_postgresql_over_verified_tls(stack):
    def sql(query: str) -> list[str]:
        out = stack.exec("postgres", f'psql -h /run/postgresql -U postgres -d jupyterhub -Atc "{query}"')
        return out.stdout.split()

    assert "researcher" in sql("select name from users")
    ssl_flags = sql("select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) "
                    "where a.usename = 'jupyterhub'")
    assert ssl_flags and set(ssl_flags) == {"t"}
    settings = json.loads(stack.exec("jupyterhub", "python3 /usr/local/bin/entrypoint.py check").stdout)
    assert "sslmode=verify-full" in settings["db_url"]
    # No secret in the container's configuration (docker inspect).
    cid = stack.compose("ps", "-q", "jupyterhub").stdout.strip()
    inspect = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout
    for name in ("jupyterhub_crypt_key", "jupyterhub_cookie_secret", "oidc_jupyterhub_secret"):
        assert stack.secret(name) not in inspect
    assert "JUPYTERHUB_CRYPT_KEY" not in inspect


def test_logout_ends_the_keycloak_session_too(stack):
    http, answer = hub_login(stack, "observer")
    if True:  # the client closes at the end of the test
        out = http.get(f"{stack.url('hub')}/hub/logout")
        assert out.status_code == 302
        assert out.headers["location"].startswith(stack.url("auth") + "/realms/flowerfl/protocol/openid-connect/logout")


# ---------------------------------------------------------------- the Docker API proxy
PROXY_CALL = """
import json, sys, urllib.request, urllib.error
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request("http://dockerproxy:2375" + path, method=method,
                             data=body.encode() if body else None, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=20) as resp:
        print(resp.status, resp.read().decode()[:300])
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode()[:300])
"""


def proxy_call(stack, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    """A Docker API call to the proxy from the hub's container (the only one that reaches it)."""
    out = stack.compose("exec", "-T", "jupyterhub", "python3", "-c", PROXY_CALL, method, path,
                        json.dumps(body) if body else "").stdout.strip()
    status, _, text = out.partition(" ")
    return int(status), text


def create_body(stack, **host) -> dict:
    project = stack.setting("COMPOSE_PROJECT_NAME")
    host_config = {"NetworkMode": f"{project}_fl-notebooks-network",
                   "Binds": [f"jupyter-{project}-home-nobody:/home/jovyan:rw"], **host}
    return {"Image": f"flfed/notebook:{stack.setting('IMAGE_TAG')}", "HostConfig": host_config}


@pytest.mark.parametrize("change,rule", [
    ({"Privileged": True}, "privileged"),
    ({"Binds": ["/:/host"]}, "bind-mount"),
    ({"NetworkMode": "host"}, "network"),
    ({"CapAdd": ["SYS_ADMIN"]}, "capabilities"),
    ({"PidMode": "host"}, "host-namespace"),
])
def test_the_docker_api_proxy_refuses_a_dangerous_create(stack, change, rule):
    project = stack.setting("COMPOSE_PROJECT_NAME")
    status, text = proxy_call(stack, "POST", f"/v1.41/containers/create?name=jupyter-{project}-evil",
                              create_body(stack, **change))
    assert status == 403 and f"({rule})" in text, text
    assert f"REFUSED rule={rule}" in stack.logs("dockerproxy")


def test_the_docker_api_proxy_refuses_another_image_and_network(stack):
    project = stack.setting("COMPOSE_PROJECT_NAME")
    body = create_body(stack)
    body["Image"] = f"flfed/postgres:{stack.setting('IMAGE_TAG')}"
    status, text = proxy_call(stack, "POST", f"/v1.41/containers/create?name=jupyter-{project}-evil", body)
    assert status == 403 and "(image)" in text
    body = create_body(stack, NetworkMode=f"{project}_fl-services-network")
    status, text = proxy_call(stack, "POST", f"/v1.41/containers/create?name=jupyter-{project}-evil", body)
    assert status == 403 and "(network)" in text


def test_the_docker_api_proxy_refuses_listing_exec_and_other_containers(stack):
    status, text = proxy_call(stack, "GET", "/v1.41/containers/json?all=1")
    assert status == 403 and "(endpoint)" in text
    postgres = stack.compose("ps", "-q", "postgres").stdout.strip()
    status, text = proxy_call(stack, "POST", f"/v1.41/containers/{postgres}/exec", {"Cmd": ["id"]})
    assert status == 403 and "(endpoint)" in text
    status, text = proxy_call(stack, "POST", f"/v1.41/containers/{postgres}/stop")
    assert status == 403 and "(container-name)" in text
    status, _ = proxy_call(stack, "GET", "/v1.41/version")
    assert status == 200
