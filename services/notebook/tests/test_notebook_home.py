"""The notebook server's start (start.py: the home skeleton) and its `flwr` wrapper
(flwr_tokens.py: the hub's tokens into flwr's credential store, and what it says when
the single sign-on session has ended), against flwr's real credential store and a
small HTTP server standing in for the hub's API."""
import base64
import importlib.util
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]


def load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


start = load("notebook_start", "start.py")
tokens = load("notebook_flwr_tokens", "flwr_tokens.py")


def jwt(**claims) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c2ln"


# ---------------------------------------------------------------- the home skeleton
def test_the_skeleton_fills_in_what_is_missing_and_never_overwrites(tmp_path):
    skel, home = tmp_path / "skel", tmp_path / "home"
    (skel / "work" / "digits" / "digits").mkdir(parents=True)
    (skel / "work" / "flower-digits.ipynb").write_text("sample")
    (skel / "work" / "digits" / "pyproject.toml").write_text("app")
    (skel / "work" / "digits" / "digits" / "task.py").write_text("task")
    assert sorted(start.copy_missing(skel, home)) == [
        "work/digits/digits/task.py", "work/digits/pyproject.toml", "work/flower-digits.ipynb"]
    (home / "work" / "flower-digits.ipynb").write_text("my edits")
    (home / "work" / "digits" / "pyproject.toml").unlink()
    assert start.copy_missing(skel, home) == ["work/digits/pyproject.toml"]     # a deleted one comes back
    assert (home / "work" / "flower-digits.ipynb").read_text() == "my edits"    # an edited one stays
    assert start.copy_missing(skel, home) == []


def test_the_sample_notebook_is_a_valid_notebook_that_plots_per_round():
    nb = json.loads((HERE / "skel" / "work" / "flower-digits.ipynb").read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    for source in code:
        compile(source, "cell", "exec")
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")   # shipped clean
    text = "\n".join(code)
    assert '"run", str(APP), CONNECTION' in text and '"log", str(run_id), CONNECTION, "--stream"' in text
    assert "import matplotlib.pyplot" in text and "savefig" in text


# ---------------------------------------------------------------- flwr_tokens.decide
NOW = 1_000_000.0


@pytest.mark.parametrize("hub,stored,expected", [
    ({"access_token": jwt(exp=NOW + 300, azp="jupyterhub")}, "", "store"),
    ({"access_token": jwt(exp=NOW + 300, azp="jupyterhub")}, jwt(exp=NOW + 300, azp="flwr-cli"), "store"),
    (None, "", "keep"),                                                           # the hub did not answer
    ({"access_token": jwt(exp=NOW - 5, azp="jupyterhub")}, jwt(exp=NOW - 5, azp="jupyterhub"), "ended"),
    ({"access_token": jwt(exp=NOW + 3, azp="jupyterhub")}, "", "ended"),          # within the skew
    ({"access_token": jwt(exp=NOW - 5, azp="jupyterhub")}, jwt(exp=NOW - 5, azp="flwr-cli"), "keep"),
    ({"access_token": jwt(exp=NOW - 5, azp="jupyterhub")}, jwt(exp=NOW + 200, azp="jupyterhub"), "keep"),
    ({"access_token": "not-a-jwt"}, "", "ended"),
])
def test_decide(hub, stored, expected):
    assert tokens.decide(hub, stored, NOW) == expected


# ---------------------------------------------------------------- the wrapper, end to end
class Hub(BaseHTTPRequestHandler):
    state: dict = {}
    seen: list = []

    def do_GET(self):
        Hub.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"name": "rita", "auth_state": Hub.state}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hub.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()


def wrapper(tmp_path, hub_url: str, state: dict, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / ".flwr"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text('[superlink]\ndefault = "fl"\n\n[superlink.fl]\n'
                                      'address = "control.fl.test:443"\nroot-certificates = "/x/ca.crt"\n')
    Hub.state = state
    env = {"FLWR_HOME": str(home), "FL_CONTROL_ADDRESS": "control.fl.test:443", "JUPYTERHUB_USER": "rita",
           "JUPYTERHUB_API_URL": hub_url, "JUPYTERHUB_API_TOKEN": "server-token", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(HERE / "flwr_tokens.py"), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def stored(tmp_path) -> str:
    tokens.FLWR_HOME = tmp_path / ".flwr"
    return tokens.stored_access_token("control.fl.test:443")


def test_fresh_tokens_from_the_hub_go_into_flwrs_credential_store(tmp_path, hub):
    access = jwt(exp=time.time() + 300, azp="jupyterhub")
    proc = wrapper(tmp_path, hub, {"access_token": access, "refresh_token": "r1"}, "--fl-tokens-only")
    assert proc.returncode == 0, proc.stderr
    assert stored(tmp_path) == access
    assert Hub.seen == [("/hub/api/users/rita", "token server-token")]
    assert "flwr login" not in proc.stderr


def test_an_ended_session_says_to_run_flwr_login_and_keeps_the_stored_tokens(tmp_path, hub):
    old = jwt(exp=time.time() - 60, azp="jupyterhub")
    assert wrapper(tmp_path, hub, {"access_token": jwt(exp=time.time() + 300), "refresh_token": "r"},
                   "--fl-tokens-only").returncode == 0
    tokens.FLWR_HOME = tmp_path / ".flwr"
    tokens.store("control.fl.test:443", {"access_token": old, "refresh_token": "r"})
    expired = jwt(exp=time.time() - 30, azp="jupyterhub")
    proc = wrapper(tmp_path, hub, {"access_token": expired, "refresh_token": "r2"}, "--fl-tokens-only")
    assert "single sign-on session has ended" in proc.stderr and "`flwr login`" in proc.stderr
    assert stored(tmp_path) == old                       # nothing expired was written


def test_a_flwr_login_of_the_users_own_is_kept_when_the_hub_cannot_renew(tmp_path, hub):
    wrapper(tmp_path, hub, {}, "--fl-tokens-only")
    tokens.FLWR_HOME = tmp_path / ".flwr"
    own = jwt(exp=time.time() - 60, azp="flwr-cli")      # expired, but flwr refreshes it itself
    tokens.store("control.fl.test:443", {"access_token": own, "refresh_token": "r"})
    proc = wrapper(tmp_path, hub, {"access_token": jwt(exp=time.time() - 30, azp="jupyterhub")},
                   "--fl-tokens-only")
    assert "flwr login" not in proc.stderr and stored(tmp_path) == own


def test_no_auth_state_at_the_hub_is_said_plainly(tmp_path, hub):
    proc = wrapper(tmp_path, hub, {}, "--fl-tokens-only")
    assert proc.returncode == 0 and "holds no tokens" in proc.stderr


@pytest.mark.parametrize("args,coloured", [
    (["ls", "--format", "json"], False), (["run", ".", "fl", "--format=json"], False),
    (["ls"], True), (["log", "1", "fl", "--stream"], True), (["ls", "--format", "default"], True),
])
def test_json_output_is_never_forced_into_colour(args, coloured):
    kernel_env = {"FORCE_COLOR": "1", "CLICOLOR_FORCE": "1", "PATH": "/usr/bin", "HOME": "/home/jovyan"}
    env = tokens.cli_environment(args, kernel_env)
    assert ("FORCE_COLOR" in env and "CLICOLOR_FORCE" in env) is coloured
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/jovyan"
