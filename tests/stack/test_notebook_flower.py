"""Flower from a notebook, as a researcher uses it: cells run in a kernel of their
server through the Jupyter REST and kernel (websocket) APIs, through the edge, with a
hub token of theirs (tests/stack/jupyter_kernel.py). `flwr ls` and a run of the sample
app; the sample notebook executed top to bottom; the workspace across a server stop and
a hub restart; `flwr` after the access token has expired (the realm's lifetime is
shortened for this module through Keycloak's admin API, and restored); after the single
sign-on session has ended, `flwr` says to run `flwr login`."""
from __future__ import annotations

import base64
import json
import secrets
import time

import httpx
import pytest

import kcadmin
from jupyter_kernel import Kernel
from test_notebooks import hub_login, start_server, stop_server, tls, xsrf

USER = "researcher"
SHORT_LIFETIME = 60       # seconds: the realm's access-token lifetime while this module runs

# A cell's helpers: flwr through the notebook's wrapper, results as one JSON line.
PRELUDE = """
import json, os, subprocess, time
from pathlib import Path
CONNECTION = os.environ["FL_CONNECTION_NAME"]

def flwr(*args, timeout=600):
    p = subprocess.run(["flwr", *args], capture_output=True, text=True, timeout=timeout)
    # the whole output: `flwr ls --format json` grows with every run the SuperLink keeps
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr[-4000:]}

def stored_claims():
    # the access token flwr will send (its claims only: no token in the test's output)
    import base64, re
    from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY
    from flwr.supercore.credential_store import FileCredentialStore
    home = Path.home() / ".flwr"
    address = os.environ["FL_CONTROL_ADDRESS"]
    token = (FileCredentialStore(home / "credentials.yaml").get(ACCESS_TOKEN_STORE_KEY % address) or b"").decode()
    if token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {k: claims.get(k) for k in ("exp", "iat", "azp", "sid", "jti")}
print("ready")
"""


@pytest.fixture(scope="module")
def session(stack):
    """The researcher signed in at the hub (cookies), their server freshly started with
    this deployment's image, and a hub API token of theirs for the server's APIs."""
    http, answer = hub_login(stack, USER)
    assert answer.status_code == 302, answer.text[:300]
    hub = stack.url("hub")
    http.get(f"{hub}/hub/home")                       # sets the _xsrf cookie
    user = http.get(f"{hub}/hub/api/users/{USER}", headers=xsrf(http)).json()
    if (user.get("servers") or {}).get(""):
        stop_server(stack, http, USER)
    start_server(stack, http, USER)
    made = http.post(f"{hub}/hub/api/users/{USER}/tokens", headers=xsrf(http),
                     json={"note": "stack test: kernels", "expires_in": 7200})
    assert made.status_code == 201, made.text[:300]
    yield {"http": http, "token": made.json()["token"], "server": f"{hub}/user/{USER}"}
    http.close()


def kernel(stack, session) -> Kernel:
    return Kernel(session["server"], session["token"], str(stack.ca), USER)


@pytest.fixture(scope="module")
def cells(stack, session):
    """One kernel for the module's cells (state carries over, as in a notebook)."""
    with kernel(stack, session) as k:
        assert k.run(PRELUDE, timeout=120).stdout.strip() == "ready"
        yield k


def contents(stack, session, path: str, **params) -> httpx.Response:
    with httpx.Client(verify=tls(stack), timeout=60, headers={"Authorization": f"token {session['token']}"}) as c:
        return c.get(f"{session['server']}/api/contents/{path}", params=params)


def test_a_cell_runs_flwr_ls_and_a_one_round_run_of_the_sample_app(cells):
    ls = cells.run('print(json.dumps(flwr("ls", CONNECTION, "--format", "json")))').last_json()
    assert ls["rc"] == 0, ls
    assert json.loads(ls["out"])["success"] is True
    submit = cells.run("""
r = flwr("run", str(Path.home() / "work" / "digits"), CONNECTION, "--format", "json",
         "--run-config", "num-server-rounds=1")
print(json.dumps(r))
""").last_json()
    assert submit["rc"] == 0, submit
    run_id = json.loads(submit["out"])["run-id"]
    done = cells.run(f"""
deadline, status = time.time() + 480, None
while time.time() < deadline:
    row = json.loads(flwr("ls", CONNECTION, "--run-id", "{run_id}", "--format", "json")["out"])["runs"][0]
    status = row["status"]
    if status.startswith("finished"):
        break
    time.sleep(3)
print(json.dumps({{"status": status}}))
""", timeout=540).last_json()
    assert done["status"] == "finished:completed", done


def test_the_sample_notebook_runs_headless_and_plots_accuracy_and_loss(stack, session):
    """The notebook the image puts into every home, executed cell by cell in a fresh
    kernel as JupyterLab's "Run All" does: the run completes and the plot is made."""
    answer = contents(stack, session, "flower-digits.ipynb")
    assert answer.status_code == 200, answer.text[:300]
    notebook = answer.json()["content"]
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and contents(stack, session, "digits/pyproject.toml").status_code == 200
    images, last = [], None
    with kernel(stack, session) as k:
        for i, source in enumerate(code):
            result = k.run(source, timeout=900)
            assert result.status == "ok", f"cell {i} failed:\n{result}"
            images += [o["image/png"] for o in result.outputs if "image/png" in o]
            last = result
    summary = last.last_json()
    assert summary["status"] == "finished:completed", summary
    rounds = {int(r) for r in summary["rounds"]}
    assert {1, 2, 3} <= rounds, summary                       # accuracy and loss of every round
    assert all(0 <= m["accuracy"] <= 1 and m["loss"] > 0 for m in summary["rounds"].values())
    assert images and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    saved = contents(stack, session, f"digits-run-{summary['run_id']}.png", content="0")
    assert saved.status_code == 200 and saved.json()["size"] > 5_000, saved.text[:300]


def test_the_workspace_survives_a_server_stop_and_a_hub_restart_and_edits_are_kept(stack, session, cells):
    marker = secrets.token_hex(8)
    wrote = cells.run(f"""
(Path.home() / "work" / "persist-probe.txt").write_text("{marker}")
nb = Path.home() / "work" / "flower-digits.ipynb"
nb.write_text(nb.read_text().replace("# A federated run from this notebook", "# My edited notebook"))
(Path.home() / "work" / "digits" / "README.md").unlink()
print("ok")
""")
    assert wrote.stdout.strip() == "ok", wrote
    # The hub restarts; the server keeps running (cleanup_servers is off) and is reached again.
    stack.compose("restart", "jupyterhub")
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if contents(stack, session, "persist-probe.txt").status_code == 200:
                break
        except httpx.HTTPError:
            pass                                      # the edge's upstream is restarting
        time.sleep(3)
    assert contents(stack, session, "persist-probe.txt").json()["content"] == marker
    # The server stops (its container is removed) and starts again on the same volume.
    stop_server(stack, session["http"], USER)
    start_server(stack, session["http"], USER)
    assert contents(stack, session, "persist-probe.txt").json()["content"] == marker
    notebook = contents(stack, session, "flower-digits.ipynb").json()["content"]
    assert "# My edited notebook" in "".join("".join(c["source"]) for c in notebook["cells"])   # not replaced
    assert contents(stack, session, "digits/README.md").status_code == 200                      # a deleted one is back


@pytest.fixture(scope="module")
def short_tokens(stack):
    """The realm's access-token lifetime shortened to SHORT_LIFETIME, then restored."""
    with kcadmin.admin_client(stack) as admin:
        realm_url = str(admin.base_url).rstrip("/")
        before = admin.get(realm_url).json()["accessTokenLifespan"]
        assert admin.put(realm_url, json={"accessTokenLifespan": SHORT_LIFETIME}).status_code == 204
    yield SHORT_LIFETIME
    with kcadmin.admin_client(stack) as admin:
        assert admin.put(str(admin.base_url).rstrip("/"), json={"accessTokenLifespan": before}).status_code == 204


def wait_until(when: float) -> None:
    if when > time.time():
        time.sleep(when - time.time())


def test_flwr_in_a_cell_works_after_the_access_token_has_expired(stack, session, short_tokens):
    # A new sign-in gives the hub short-lived tokens (the server reads them from the hub).
    http, answer = hub_login(stack, USER)
    http.close()
    assert answer.status_code == 302
    with kernel(stack, session) as k:
        k.run(PRELUDE, timeout=120)
        first = k.run('r = flwr("ls", CONNECTION, "--format", "json"); print(json.dumps({**r, "claims": stored_claims()}))').last_json()
        assert first["rc"] == 0, first
        claims = first["claims"]
        assert claims["azp"] == "jupyterhub" and claims["exp"] - claims["iat"] <= SHORT_LIFETIME
        wait_until(claims["exp"] + 3)
        assert time.time() > claims["exp"]                   # what flwr last stored has expired
        again = k.run('r = flwr("ls", CONNECTION, "--format", "json"); print(json.dumps({**r, "claims": stored_claims()}))').last_json()
    assert again["rc"] == 0, again
    assert json.loads(again["out"])["success"] is True
    assert again["claims"]["jti"] != claims["jti"] and again["claims"]["exp"] > time.time()
    assert "flwr login" not in again["err"]
    assert f"refreshed {USER}'s tokens with the hub's client" in stack.logs("jupyterhub")


def test_after_the_sso_session_ended_flwr_in_a_cell_says_to_run_flwr_login(stack, session, short_tokens):
    """An administrator logs the user out in Keycloak: once the last access token has
    expired the hub can no longer refresh it, and `flwr` says what to do."""
    with kernel(stack, session) as k:
        k.run(PRELUDE, timeout=120)
        before = k.run('r = flwr("ls", CONNECTION, "--format", "json"); print(json.dumps({**r, "claims": stored_claims()}))').last_json()
        assert before["rc"] == 0, before
        with kcadmin.admin_client(stack) as admin:
            user = kcadmin.user(admin, USER)
            assert admin.post(f"/users/{user['id']}/logout").status_code == 204
        wait_until(before["claims"]["exp"] + 3)
        after = k.run('print(json.dumps(flwr("ls", CONNECTION, "--format", "json")))').last_json()
    # refused: a non-zero exit, or (with --format json, which exits 0) success false
    assert after["rc"] != 0 or json.loads(after["out"])["success"] is False, after
    assert "single sign-on session has ended" in after["err"] and "`flwr login`" in after["err"], after
    assert "Run `flwr login`" in after["out"]              # the Control API's gate says so too
    assert f"refreshing {USER}'s tokens failed" in stack.logs("jupyterhub")
