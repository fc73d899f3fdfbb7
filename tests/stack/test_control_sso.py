"""Single sign-on on the SuperLink Control API through the edge (issue 4).

control.<domain> is NGINX; it asks ctlgate (auth_request) about every Control call's
Keycloak access token and lets ctlgate answer the flwr CLI's login calls (device flow).
Tested from outside as a researcher does it: the real `flwr` CLI (login, ls, run, log,
silent token refresh), then raw HTTP with good, bad and foreign tokens. Each refusal is
also checked in ctlgate's log, which names the reason (the client sees only the status).
"""
from __future__ import annotations

import base64
import json
import queue
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY, AUTHN_TYPE_STORE_KEY, REFRESH_TOKEN_STORE_KEY
from flwr.proto.control_pb2 import ListRunsResponse
from flwr.supercore.credential_store import FileCredentialStore

import kcadmin
import oidc
from stackenv import loopback_env, utc_now
from edge import client, handshake, https_port, tls_context
from fedops import federation, paths

FLWR = Path(sys.executable).with_name("flwr")
APP = paths.ROOT / "apps" / "digits"
CONNECTION = "fl"
PROTOBUF = {"content-type": "application/protobuf", "accept": "application/protobuf"}
LIST_RUNS = "/v1/control/list-runs"
NOT_AUTHENTICATED = b'{"detail":"Not authenticated"}\n'
FORBIDDEN = b'{"detail":"Forbidden: your account may not use the Control API"}\n'
# NGINX's own 404 on the control host. The SuperLink (FastAPI) answers an unknown path
# with the same JSON but no newline (and POST /v1/runtime/acquire-task with 200): this
# exact body proves the request never left the edge.
EDGE_NOT_FOUND = b'{"detail":"Not Found"}\n'
LIFESPAN_ATTRIBUTE = "access.token.lifespan"
# ctlgate's log line for each auth_request decision it refuses (services/ctlgate/ctlgate/server.py)
DECISION_RE = re.compile(r"auth (?P<method>\S+) (?P<uri>\S+) user=(?P<user>\S+) -> (?P<status>\d{3}) (?P<reason>\w+)")
URL_RE = re.compile(r"https://\S+")


# ---------------------------------------------------------------- the edge over HTTP
def control_url(stack, path: str) -> str:
    return f"{stack.url('control')}{path}"


def call_control(stack, path: str = LIST_RUNS, token: str | None = None, method: str = "POST",
                 authorization: str | None = None) -> httpx.Response:
    """One Control API call as the flwr CLI makes it: protobuf over HTTP POST, empty body
    (a valid empty request message)."""
    headers = dict(PROTOBUF)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    with client(stack) as http:
        return http.request(method, control_url(stack, path), headers=headers, content=b"")


def raw_request(stack, target: str, token: str) -> tuple[int, bytes]:
    """A request line sent byte for byte (no client-side normalisation of the path)."""
    host = stack.hostname("control")
    request = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    with handshake(host, tls_context(stack)) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def ctlgate_decisions(stack, since: str) -> list[dict]:
    return [m.groupdict() for m in DECISION_RE.finditer(stack.logs("ctlgate", since=since))]


def assert_ctlgate_decided(stack, since: str, status: int, reason: str, user: str | None = None,
                           uri: str = LIST_RUNS) -> None:
    """ctlgate logged its decision on our request, with this reason (polled briefly: the
    log reaches Docker a moment after the answer)."""
    deadline = time.time() + 10
    while True:
        found = ctlgate_decisions(stack, since)
        if any(d["uri"] == uri and d["status"] == str(status) and d["reason"] == reason
               and (user is None or d["user"] == user) for d in found):
            return
        if time.time() > deadline:
            raise AssertionError(f"ctlgate logged no {status} {reason} for {uri} (user {user}): {found}")
        time.sleep(0.5)


def assert_unauthenticated(response: httpx.Response) -> None:
    """401 with exactly one challenge, exactly `Bearer` (the flwr CLI refreshes only then)."""
    assert response.status_code == 401, response.text
    assert response.headers.get_list("www-authenticate") == ["Bearer"]
    assert response.content == NOT_AUTHENTICATED
    assert "x-ctlgate-reason" not in response.headers and "x-ctlgate-user" not in response.headers


# ---------------------------------------------------------------- tokens
def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_flipped_signature_byte(token: str) -> str:
    header, payload, signature = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    sig[len(sig) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(sig))}"


def forged_with_foreign_key(token: str) -> str:
    """The same claims and the realm key's kid, signed with a key Keycloak never had."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims_of(token), key, algorithm="RS256",
                      headers={"kid": jwt.get_unverified_header(token)["kid"]})


def unsigned(token: str) -> str:
    """alg=none with the same claims and kid."""
    header = {"alg": "none", "typ": "JWT", "kid": jwt.get_unverified_header(token)["kid"]}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims_of(token)).encode())}."


def wait_until_expired(token: str) -> None:
    time.sleep(max(0.0, claims_of(token)["exp"] - time.time() + 1.5))


@contextmanager
def access_token_lifespan(stack, seconds: int, client_id: str = "flwr-cli"):
    """Keycloak issues `client_id` access tokens valid for `seconds` inside the block;
    the client's previous setting is restored (and checked) on the way out."""
    with kcadmin.admin_client(stack) as admin:
        rep = admin.get("/clients", params={"clientId": client_id}).json()[0]
        before = rep.get("attributes", {}).get(LIFESPAN_ATTRIBUTE)
        rep.setdefault("attributes", {})[LIFESPAN_ATTRIBUTE] = str(seconds)
        admin.put(f"/clients/{rep['id']}", json=rep).raise_for_status()
        try:
            yield
        finally:
            rep["attributes"][LIFESPAN_ATTRIBUTE] = before     # None removes the attribute
            admin.put(f"/clients/{rep['id']}", json=rep).raise_for_status()
            restored = admin.get(f"/clients/{rep['id']}").json().get("attributes", {})
            assert restored.get(LIFESPAN_ATTRIBUTE) == before, "the client's token lifespan was not restored"


def short_lived_tokens(stack, username: str, password: str, seconds: int = 15) -> dict:
    """A real device-flow token pair whose access token lives `seconds`."""
    with access_token_lifespan(stack, seconds):
        tokens = oidc.device_flow_tokens(stack, username, password)
    claims = claims_of(tokens["access_token"])
    assert claims["exp"] - claims["iat"] == seconds
    return tokens


# ---------------------------------------------------------------- the flwr CLI
def flwr_home(stack, path: Path) -> Path:
    """A FLWR_HOME holding only the researchers' connection (as `invoke fl.connection`)."""
    federation.write_connection(path, CONNECTION, stack.fed)
    return path


def flwr_env(stack, home: Path) -> dict[str, str]:
    # BROWSER=true: `flwr login` "opens" the URL with /bin/true; the test is the browser.
    return {**loopback_env(stack.fed), "FLWR_HOME": str(home), "BROWSER": "true", "NO_COLOR": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0"}


def flwr(stack, home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLWR), *args], env=flwr_env(stack, home), cwd=home,
                          capture_output=True, text=True, timeout=timeout)


def flwr_json(stack, home: Path, *args: str) -> dict:
    proc = flwr(stack, home, *args, "--format", "json")
    assert proc.returncode == 0, f"flwr {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return federation.parse_json(proc.stdout)


@dataclass
class Login:
    returncode: int
    output: str
    verification_url: str


def flwr_login(stack, home: Path, username: str, password: str, timeout: float = 120) -> Login:
    """`flwr login fl` as a subprocess; the URL it prints is opened and approved as
    `username` through Keycloak's real forms."""
    proc = subprocess.Popen([str(FLWR), "login", CONNECTION], env=flwr_env(stack, home), cwd=home,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output, url = [], None
    try:
        deadline = time.time() + 30
        while url is None:
            line = lines.get(timeout=max(0.1, deadline - time.time()))
            if line is None:
                raise AssertionError(f"flwr login ended without a URL: {''.join(output)}")
            output.append(line)
            if match := URL_RE.search(line):
                url = match.group(0)
        with client(stack) as browser:
            oidc.approve_device(stack, browser, url, username, password)
        proc.wait(timeout=timeout)
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        raise AssertionError(f"flwr login hung: {''.join(output)}") from None
    while (line := lines.get(timeout=10)) is not None:
        output.append(line)
    return Login(proc.returncode, "".join(output), url)


def connection_address(home: Path) -> str:
    """The control host's address in the connection: the key of its stored tokens."""
    return re.search(r'address = "([^"]+)"', (home / "config.toml").read_text()).group(1)


def stored_tokens(home: Path) -> dict[str, str | None]:
    """What the CLI keeps in FLWR_HOME/credentials.yaml for the control host."""
    store = FileCredentialStore(home / "credentials.yaml")
    address = connection_address(home)

    def get(key: str) -> str | None:
        value = store.get(key % address)
        return value.decode() if value is not None else None

    return {"authn_type": get(AUTHN_TYPE_STORE_KEY), "access": get(ACCESS_TOKEN_STORE_KEY),
            "refresh": get(REFRESH_TOKEN_STORE_KEY)}


def store_tokens(home: Path, tokens: dict) -> None:
    """Put a token pair where `flwr login` puts it (flwr's own credential store)."""
    store = FileCredentialStore(home / "credentials.yaml")
    address = connection_address(home)
    store.set(AUTHN_TYPE_STORE_KEY % address, b"oidc")
    store.set(ACCESS_TOKEN_STORE_KEY % address, tokens["access_token"].encode())
    store.set(REFRESH_TOKEN_STORE_KEY % address, tokens["refresh_token"].encode())


def admin_run_ids() -> set[str]:
    """The runs as the SuperLink itself lists them (admin CLI inside its container)."""
    return {r["run-id"] for r in federation.runs()}


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def passwords(stack) -> dict[str, str]:
    return json.loads(stack.secret("keycloak_users"))


@pytest.fixture(scope="module")
def tokens(stack, passwords) -> dict[str, dict]:
    """Device-flow tokens of the flwr-cli client (what `flwr login` obtains), per user."""
    return {user: oidc.device_flow_tokens(stack, user, passwords[user])
            for user in ("researcher", "hubadmin", "observer")}


@pytest.fixture(scope="module")
def researcher(stack, passwords, tmp_path_factory) -> tuple[Path, Login]:
    """A FLWR_HOME after a real `flwr login` as researcher."""
    home = flwr_home(stack, tmp_path_factory.mktemp("flwr-researcher"))
    return home, flwr_login(stack, home, "researcher", passwords["researcher"])


# ---------------------------------------------------------------- the flwr CLI through the edge
def test_the_connection_points_at_the_control_host_with_the_project_ca(stack, tmp_path):
    text = (flwr_home(stack, tmp_path) / "config.toml").read_text()
    assert f'address = "{stack.hostname("control")}:{https_port()}"' in text
    assert f'root-certificates = "{stack.ca}"' in text
    assert "insecure" not in text


def test_flwr_ls_before_login_is_refused(stack, tmp_path):
    since = utc_now()
    proc = flwr(stack, flwr_home(stack, tmp_path), "ls", CONNECTION)
    assert proc.returncode != 0
    assert "Authentication failed. Please run `flwr login`" in proc.stdout + proc.stderr
    assert_ctlgate_decided(stack, since, 401, "missing_token")


def test_flwr_login_signs_in_through_keycloaks_device_flow(stack, researcher):
    home, login = researcher
    assert login.returncode == 0, login.output
    assert "Login successful" in login.output
    assert re.fullmatch(rf"{re.escape(oidc.realm_url(stack))}/device\?user_code=[A-Z]{{4}}-[A-Z]{{4}}",
                        login.verification_url), login.verification_url
    stored = stored_tokens(home)
    assert stored["authn_type"] == "oidc" and stored["refresh"]
    claims = claims_of(stored["access"])
    assert claims["preferred_username"] == "researcher" and claims["azp"] == "flwr-cli"
    assert claims["iss"] == oidc.realm_url(stack) and "ctlgate" in claims["aud"]
    assert "superlink_user" in claims["realm_access"]["roles"]


def test_flwr_ls_after_login_lists_the_superlinks_runs(stack, researcher):
    home, login = researcher
    assert login.returncode == 0, login.output
    known = admin_run_ids()
    listed = flwr_json(stack, home, "ls", CONNECTION)
    assert listed["success"] is True and isinstance(listed["runs"], list)
    assert known <= {r["run-id"] for r in listed["runs"]}


def test_flwr_login_without_the_superlink_role_fails_and_stores_nothing(stack, passwords, tmp_path):
    home = flwr_home(stack, tmp_path)
    login = flwr_login(stack, home, "observer", passwords["observer"])
    assert login.returncode != 0, login.output
    assert "[code: 9]" in login.output and "no 'superlink_user' realm role" in login.output
    assert "Login successful" not in login.output
    assert stored_tokens(home) == {"authn_type": None, "access": None, "refresh": None}


def test_flwr_run_through_the_edge_completes_a_one_round_run(stack, researcher):
    home, login = researcher
    assert login.returncode == 0, login.output
    started = flwr_json(stack, home, "run", str(APP), CONNECTION, "--run-config", "num-server-rounds=1")
    assert started["success"] is True and started["fab-name"] == "digits"
    run_id = started["run-id"]
    row = federation.wait_finished(
        run_id, timeout=300, poll=3,
        status=lambda rid: flwr_json(stack, home, "ls", CONNECTION, "--run-id", rid)["runs"][0])
    assert row["status"] == "finished:completed", row
    log = flwr(stack, home, "log", run_id, CONNECTION, "--show")
    assert log.returncode == 0, log.stderr
    assert "[ROUND 1/1]" in log.stdout and "[ROUND 2" not in log.stdout
    assert run_id in admin_run_ids()


def test_flwr_refreshes_an_expired_access_token_silently(stack, passwords, tmp_path):
    """The CLI's refresh works only if the edge's 401 carries exactly `Bearer`."""
    home = flwr_home(stack, tmp_path)
    old = short_lived_tokens(stack, "researcher", passwords["researcher"])
    store_tokens(home, old)
    wait_until_expired(old["access_token"])
    since = utc_now()
    listed = flwr_json(stack, home, "ls", CONNECTION)
    assert listed["success"] is True
    new = stored_tokens(home)
    assert new["access"] != old["access_token"] and new["refresh"] != old["refresh_token"]
    assert claims_of(new["access"])["preferred_username"] == "researcher"
    assert claims_of(new["access"])["exp"] > time.time()
    assert_ctlgate_decided(stack, since, 401, "expired", user="researcher")
    assert re.search(r"POST /v1/control/refresh-auth-tokens -> 200 refreshed", stack.logs("ctlgate", since=since))


# ---------------------------------------------------------------- the Control API over HTTP
@pytest.mark.parametrize("authorization", [None, "Basic cmVzZWFyY2hlcjp4", "Bearer"],
                         ids=["no-header", "basic", "bearer-without-token"])
def test_a_call_without_a_bearer_token_gets_401_bearer(stack, authorization):
    since = utc_now()
    assert_unauthenticated(call_control(stack, authorization=authorization))
    assert_ctlgate_decided(stack, since, 401, "missing_token")


@pytest.mark.parametrize("user", ["researcher", "hubadmin"])
def test_a_superlink_user_token_lists_the_runs(stack, tokens, user):
    known = admin_run_ids()
    since = utc_now()
    r = call_control(stack, token=tokens[user]["access_token"])
    assert r.status_code == 200, r.text
    # The audit trail: who called which Control API method.
    assert_ctlgate_decided(stack, since, 200, "ok", user=user)
    assert r.headers["content-type"] == "application/protobuf"
    reply = ListRunsResponse.FromString(r.content)
    assert reply.now, "ListRunsResponse without its timestamp"
    assert known <= {str(run_id) for run_id in reply.run_dict}


def test_a_valid_token_without_the_superlink_role_gets_403(stack, tokens):
    token = tokens["observer"]["access_token"]
    assert "superlink_user" not in claims_of(token)["realm_access"]["roles"]
    since = utc_now()
    r = call_control(stack, token=token)
    assert r.status_code == 403 and r.content == FORBIDDEN
    assert "www-authenticate" not in r.headers
    assert_ctlgate_decided(stack, since, 403, "missing_role", user="observer")


@pytest.mark.parametrize("variant, reason", [
    ("flipped-signature-byte", "bad_signature"),
    ("foreign-key-same-kid", "bad_signature"),
    ("alg-none", "bad_algorithm"),
    ("id-token", "wrong_audience"),
    ("refresh-token", "bad_algorithm"),
    ("monitoring-client-token", "wrong_audience"),
    ("master-realm-token", "unknown_kid"),
])
def test_a_bad_or_foreign_token_gets_401(stack, tokens, passwords, variant, reason):
    good = tokens["researcher"]
    if variant == "flipped-signature-byte":
        token = with_flipped_signature_byte(good["access_token"])
    elif variant == "foreign-key-same-kid":
        token = forged_with_foreign_key(good["access_token"])
    elif variant == "alg-none":
        token = unsigned(good["access_token"])
    elif variant == "id-token":
        token = good["id_token"]
    elif variant == "refresh-token":
        token = good["refresh_token"]
    elif variant == "monitoring-client-token":     # same user, same realm, another client
        # (not the hub's: its tokens carry ctlgate's audience on purpose, for notebooks)
        with client(stack) as http:
            token = oidc.authorization_code_login(
                stack, http, "monitoring", f"{stack.url('prometheus')}/oauth2/callback",
                "researcher", passwords["researcher"])["access_token"]
        claims = claims_of(token)
        aud = claims.get("aud") or []
        assert claims["azp"] == "monitoring" and "ctlgate" not in ([aud] if isinstance(aud, str) else aud)
    else:                                           # another issuer: Keycloak's master realm
        with kcadmin.admin_client(stack) as admin:
            token = admin.headers["Authorization"].removeprefix("Bearer ")
        assert claims_of(token)["iss"] != oidc.realm_url(stack)
    since = utc_now()
    assert_unauthenticated(call_control(stack, token=token))
    assert_ctlgate_decided(stack, since, 401, reason)


def test_an_access_token_is_refused_once_it_expires(stack, passwords):
    token = short_lived_tokens(stack, "hubadmin", passwords["hubadmin"])["access_token"]
    assert call_control(stack, token=token).status_code == 200
    wait_until_expired(token)
    since = utc_now()
    assert_unauthenticated(call_control(stack, token=token))
    assert_ctlgate_decided(stack, since, 401, "expired", user="hubadmin")


# ---------------------------------------------------------------- what the control host does not serve
@pytest.mark.parametrize("path", [
    "/v1/runtime/acquire-task", "/v1/runtime/push-object", "/v1/runtime/pull-task-input",
    "/v1/fleet/register-node", "/v1/fleet/send-node-heartbeat",
    "/docs", "/redoc", "/openapi.json", "/health", "/",
    "/auth", "/metrics", "/status", "/healthz",           # ctlgate's own routes
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_other_superlink_and_ctlgate_paths_are_not_served(stack, tokens, path, method):
    """Even with a valid superlink_user token: NGINX answers 404 itself."""
    r = call_control(stack, path, token=tokens["researcher"]["access_token"], method=method)
    assert r.status_code == 404 and r.content == EDGE_NOT_FOUND


@pytest.mark.parametrize("target", [
    "/v1/control/../runtime/acquire-task",
    "/v1/control/%2e%2e/runtime/acquire-task",
    "/v1/control/list-runs%2f..%2f..%2fruntime%2facquire-task",
    "/v1/control/list-runs/../../fleet/register-node",
    "/v1/control//list-runs",
    "/v1/control/list-runs;x",
    "/v1/control/list-runs?x=1",
    "/v1/CONTROL/list-runs",
])
def test_path_tricks_reach_neither_the_runtime_api_nor_the_control_api(stack, tokens, target):
    status, body = raw_request(stack, target, tokens["researcher"]["access_token"])
    assert (status, body) == (404, EDGE_NOT_FOUND)


def test_the_auth_subrequest_location_is_internal(stack, tokens):
    status, body = raw_request(stack, "/_auth", tokens["researcher"]["access_token"])
    assert status == 404 and b"404 Not Found" in body and b"status" not in body
