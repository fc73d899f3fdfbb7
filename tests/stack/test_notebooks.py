"""JupyterHub at hub.<domain>: Keycloak login through the edge (no browser), the group
rule, the filtering Docker API proxy, notebook servers on the notebooks network."""
from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time

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


# ---------------------------------------------------------------- notebook servers
def notebook_container(stack, username: str) -> str:
    return f"jupyter-{stack.setting('COMPOSE_PROJECT_NAME')}-{username}"


def docker_exec(container: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True, timeout=timeout)


def start_server(stack, http: httpx.Client, username: str, timeout: float = 240) -> dict:
    """Start the user's server through the hub's REST API (as the user) and wait for it."""
    from fedops.errors import FedopsError
    from fedops.signin import HubUser
    user = HubUser(stack.url("hub"), stack.ca, username, http=http)
    http.get(f"{user.hub}/hub/home")                  # sets the _xsrf cookie
    user.start()
    try:
        user.wait_ready(timeout)
    except FedopsError:
        raise AssertionError(f"{username}'s server is not ready after {timeout}s:\n"
                             f"{stack.logs('jupyterhub')[-3000:]}") from None
    return user.server()


def stop_server(stack, http: httpx.Client, username: str, timeout: float = 120) -> None:
    from fedops.signin import HubUser
    user = HubUser(stack.url("hub"), stack.ca, username, http=http)
    user.stop(timeout)
    assert not user.server(), f"{username}'s server did not stop within {timeout}s"


@pytest.fixture(scope="module")
def server(stack, researcher):
    """researcher's notebook server, started through the hub's API."""
    start_server(stack, researcher, "researcher")
    return notebook_container(stack, "researcher")


def test_a_server_starts_on_the_notebooks_network_with_limits_and_a_named_volume(stack, server):
    attrs = json.loads(subprocess.run(["docker", "inspect", server], capture_output=True, text=True).stdout)[0]
    project = stack.setting("COMPOSE_PROJECT_NAME")
    assert list(attrs["NetworkSettings"]["Networks"]) == [f"{project}_fl-notebooks-network"]
    host = attrs["HostConfig"]
    assert host["Privileged"] is False and host["CapDrop"] == ["ALL"]
    assert host["Memory"] == 2 << 30 and host["CpuQuota"] == host["CpuPeriod"]     # federation.yaml: 2G, 1 CPU
    mounts = attrs["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
        ("volume", f"jupyter-{project}-home-researcher", "/home/jovyan")]
    assert attrs["Config"]["Labels"]["fl.notebook.prefix"] == f"jupyter-{project}"


def test_the_server_answers_its_user_through_the_edge_and_nobody_else(stack, researcher, server):
    hub = stack.url("hub")
    # The server's own OAuth with the hub (redirects), then JupyterLab and its API.
    lab = researcher.get(f"{hub}/user/researcher/lab", follow_redirects=True)
    assert lab.status_code == 200 and "JupyterLab" in lab.text, lab.text[:300]
    contents = researcher.get(f"{hub}/user/researcher/api/contents")   # root: ~/work
    assert contents.status_code == 200 and contents.json()["type"] == "directory", contents.text[:300]
    with httpx.Client(verify=tls(stack), timeout=30) as anonymous:
        answer = anonymous.get(f"{hub}/user/researcher/api/contents")
        assert answer.status_code in (302, 403) or "oauth_login" in str(answer.headers.get("location", ""))
    other, _ = hub_login(stack, "observer")
    try:
        answer = other.get(f"{hub}/user/researcher/api/contents", headers=xsrf(other), follow_redirects=True)
        assert answer.status_code in (403, 404), answer.status_code
    finally:
        other.close()


def test_from_a_notebook_only_the_edge_is_reachable(stack, server):
    """SuperLink, PostgreSQL, Keycloak's port and the Docker API proxy: unreachable, by
    name and by every address they have; control., auth. and hub. answer through the edge."""
    probe = """
import socket, sys, json
results = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        results[target] = "open"
    except OSError as exc:
        results[target] = type(exc).__name__
print(json.dumps(results))
"""
    targets = []
    for service, port in (("superlink", 8000), ("postgres", 5432), ("keycloak", 8443), ("dockerproxy", 2375),
                          ("ctlgate", 8081)):
        targets.append(f"{service}:{port}")
        cid = stack.compose("ps", "-q", service).stdout.strip()
        attrs = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
        targets += [f"{n['IPAddress']}:{port}" for n in attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"]]
    out = docker_exec(server, "python3", "-c", probe, json.dumps(targets))
    results = json.loads(out.stdout)
    assert all(v != "open" for v in results.values()), results
    for name in ("control", "auth", "hub"):
        check = docker_exec(server, "python3", "-c",
                            f"import urllib.request; print(urllib.request.urlopen('https://{stack.hostname(name)}/', timeout=10).status)")
        assert "SSL" not in check.stderr and "refused" not in check.stderr, check.stderr[-500:]


# ---- the internet: only through the egress proxy, only what notebooks.egress admits ----

FETCH = """
import json, sys, urllib.error, urllib.request
out = {}
for url in json.loads(sys.argv[1]):
    try:
        out[url] = urllib.request.urlopen(url, timeout=20).status     # HTTP(S)_PROXY from the env
    except urllib.error.HTTPError as exc:
        out[url] = f"{exc.code} {exc.headers.get('X-Squid-Error', '')}".strip()
    except Exception as exc:
        out[url] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def fetch(server: str, urls: list[str]) -> dict[str, str]:
    done = docker_exec(server, "python3", "-c", FETCH, json.dumps(urls))
    assert done.returncode == 0, done.stderr[-1000:]
    return json.loads(done.stdout)


def private_urls(stack) -> list[str]:
    """Destinations inside the platform (by names the proxy resolves, and PostgreSQL by
    its address) and, when its address is a private one, this machine. (The hub's API,
    jupyterhub:8081, is in NO_PROXY: servers reach it directly, never through the proxy.)"""
    import ipaddress

    from test_zones import host_address
    cid = stack.compose("ps", "-q", "postgres").stdout.strip()
    attrs = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
    postgres = next(n["IPAddress"] for n in attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"])
    urls = ["http://nginx:8080/nginx_status", "http://egress-proxy:3128/",
            f"http://{postgres}:5432/"]
    if ipaddress.ip_address(host_address()).is_private:
        urls.append(f"http://{host_address()}:22/")
    return urls


def refused(answer: str) -> bool:
    """The proxy's refusal (403 ERR_ACCESS_DENIED) or, for HTTPS, its tunnel refused."""
    return answer.startswith("403") or "Tunnel connection failed: 403" in answer


def test_a_notebook_server_reaches_the_internet_only_through_the_egress_proxy(stack, server):
    env = docker_exec(server, "printenv", "HTTPS_PROXY", "NO_PROXY").stdout.split()
    assert env[0] == "http://egress-proxy:3128"
    assert {"jupyterhub", *(stack.hostname(n) for n in ("control", "auth", "hub"))} <= set(env[1].split(","))
    # notebooks.egress is [] by default: the proxy refuses everything, with its own page
    answers = fetch(server, ["http://example.org/", "https://example.org/", *private_urls(stack)])
    print("\negress [] (default):", json.dumps(answers, indent=1))
    assert all(refused(a) for a in answers.values()), answers
    assert answers["http://example.org/"].startswith("403 ERR_ACCESS_DENIED")


def test_an_egress_setting_lets_notebooks_install_packages_but_never_reach_the_platform(stack, server):
    """notebooks.egress ["*"] in federation.local.yaml and `invoke up`: pip in a notebook
    server downloads a package from its default index through the proxy; the platform's
    services and this machine stay refused. Put back afterwards."""
    from fedops import compose

    from stackenv import local_config
    with local_config(stack, lambda data: data.setdefault("notebooks", {}).update(egress=["*"])) as cfg:
        assert "egress-proxy" in cfg.up, cfg.up[-2000:]
        # Behind a TLS-intercepting proxy (this machine's builds use FL_BUILD_EXTRA_CA),
        # pip needs that CA too (the server's SSL_CERT_FILE holds the system roots and
        # the project CA); on a machine with a direct way out it needs nothing.
        trust = []
        extra = compose.settings().get("FL_BUILD_EXTRA_CA", "")
        if extra and not extra.endswith("no-extra-ca.pem") and os.path.isfile(extra):
            with open(extra, "rb") as bundle:
                copied = subprocess.run(["docker", "exec", "-i", server, "sh", "-c", 'f=$(mktemp); cat > "$f"; echo "$f"'],
                                        stdin=bundle, capture_output=True, check=True, timeout=60)
            bundle_in = copied.stdout.decode().strip()
            trust = ["-e", f"SSL_CERT_FILE={bundle_in}", "-e", f"REQUESTS_CA_BUNDLE={bundle_in}"]
        pip = subprocess.run(["docker", "exec", *trust, server, "/opt/venv/bin/pip", "download", "--no-deps",
                              "--disable-pip-version-check", "-d", "/tmp/egress-check", "flwr==1.42.0"],
                             capture_output=True, text=True, timeout=300)
        assert pip.returncode == 0, pip.stdout[-1500:] + pip.stderr[-1500:]
        assert "Saved" in pip.stdout or "already" in pip.stdout, pip.stdout[-500:]
        answers = fetch(server, private_urls(stack))
        print("\negress [*]:", json.dumps(answers, indent=1))
        assert all(refused(a) for a in answers.values()), answers
    # back to nothing
    assert fetch(server, ["http://example.org/"])["http://example.org/"].startswith("403 ERR_ACCESS_DENIED")


def stored_access_token(server: str) -> str:
    read = """
import re
from pathlib import Path
from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY
from flwr.supercore.credential_store import FileCredentialStore
home = Path.home() / ".flwr"
address = re.search(r'address = "([^"]+)"', (home / "config.toml").read_text()).group(1)
print((FileCredentialStore(home / "credentials.yaml").get(ACCESS_TOKEN_STORE_KEY % address) or b"").decode())
"""
    return docker_exec(server, "python3", "-c", read).stdout.strip()


def test_flwr_ls_runs_from_a_notebook_without_a_second_login(stack, server):
    """The server's flwr connection (control.<domain> through the edge, the project CA)
    and the user's tokens from the hub: `flwr ls` works as it is."""
    ls = docker_exec(server, "flwr", "ls", "--format", "json")
    assert ls.returncode == 0, ls.stdout[-1000:] + ls.stderr[-1000:]
    assert json.loads(ls.stdout).get("success") is True, ls.stdout
    token = stored_access_token(server)
    assert token.count(".") == 2
    # ... which appears nowhere in the container's configuration.
    inspect = subprocess.run(["docker", "inspect", server], capture_output=True, text=True).stdout
    assert token not in inspect and token.split(".")[1] not in inspect


def test_the_hub_refreshes_a_notebooks_tokens_with_its_own_client(stack, server):
    """An access token near its end (5-minute lifetime) is refreshed by the hub, with
    the client it was issued to, when the server's `flwr` asks for it."""
    import jwt
    first = stored_access_token(server)
    claims = jwt.decode(first, options={"verify_signature": False})
    assert claims["azp"] == "jupyterhub" and "ctlgate" in claims["aud"]
    wait = claims["exp"] - time.time() - 120 + 35        # inside the hub's refresh margin
    if wait > 0:
        time.sleep(wait)
    ls = docker_exec(server, "flwr", "ls", "--format", "json")
    assert ls.returncode == 0, ls.stdout[-1000:] + ls.stderr[-1000:]
    second = stored_access_token(server)
    assert second != first
    assert jwt.decode(second, options={"verify_signature": False})["exp"] > claims["exp"]
    assert "refreshed researcher's tokens with the hub's client" in stack.logs("jupyterhub")


def test_a_file_in_the_workspace_survives_stopping_the_server(stack, researcher, server):
    marker = secrets.token_hex(8)
    assert docker_exec(server, "sh", "-c", f"echo {marker} > ~/work/persist.txt").returncode == 0
    stop_server(stack, researcher, "researcher")
    gone = subprocess.run(["docker", "inspect", server], capture_output=True, text=True)
    assert gone.returncode != 0          # removed; the volume stays
    start_server(stack, researcher, "researcher")
    assert docker_exec(server, "cat", "/home/jovyan/work/persist.txt").stdout.strip() == marker
