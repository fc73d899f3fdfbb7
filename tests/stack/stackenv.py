"""Helpers the stack tests import by name (conftest is not importable by name when
several test folders each have one)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
import types
from pathlib import Path

from fedops import config, federation

LOOPBACK = Path(__file__).resolve().parent / "loopback"


def loopback_env(fed: config.Federation) -> dict[str, str]:
    """Environment for subprocesses (the flwr CLI) that must resolve the public names."""
    return {**os.environ, "FL_TEST_DOMAIN": fed.domain,
            "PYTHONPATH": os.pathsep.join([str(LOOPBACK), os.environ.get("PYTHONPATH", "")])}


def connect(stack, user="keycloak", db=None, password=None, sslmode="verify-full", **kw):
    """A PostgreSQL connection from this machine through the administration port."""
    import psycopg
    return psycopg.connect(host="localhost", port=int(stack.setting("FL_POSTGRES_PORT")),
                           user=user, dbname=db or user,
                           password=password if password is not None else stack.secret(f"{user}_db_password"),
                           sslmode=sslmode, sslrootcert=str(stack.ca), connect_timeout=10, **kw)


def completed_run(rounds: int = 1) -> str:
    """The id of a run that finished:completed: an existing one, else a new run."""
    done = [r["run-id"] for r in federation.runs() if r["status"] == "finished:completed"]
    if done:
        return done[-1]
    row = federation.wait_finished(federation.submit("digits", rounds))
    assert row["status"] == "finished:completed", row
    return row["run-id"]


def utc_now() -> str:
    """Now, as `docker compose logs --since` takes it."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def online_by_org() -> dict[str, str]:
    """Each registered SuperNode's status, by the organisation it was registered for."""
    return {n.name: n.status for n in federation.nodes() if n.name}


def wait_all_online(stack, timeout: float = 240) -> None:
    orgs = {o.name for o in stack.fed.organisations}
    deadline = time.time() + timeout
    while True:
        states = online_by_org()
        if all(states.get(o) == "online" for o in orgs):
            return
        if time.time() > deadline:
            raise AssertionError(f"SuperNodes not all online after {timeout:.0f}s: {states}")
        time.sleep(3)


@contextlib.contextmanager
def local_config(stack, change):
    """federation.local.yaml of the test deployment changed by `change(data)` and
    `invoke up --no-build` run; yields that up's output. Afterwards the file is put back
    and `invoke up --no-build` runs again (its output: the `restored` attribute)."""
    import yaml

    from fedops import paths
    local = paths.LOCAL_CONFIG
    saved = local.read_text() if local.exists() else None
    data = (yaml.safe_load(saved) or {}) if saved else {}
    change(data)
    outcome = types.SimpleNamespace(up=None, restored=None)
    try:
        local.write_text(yaml.safe_dump(data))
        up = stack.invoke("up", "--no-build", check=False)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        outcome.up = up.stdout
        yield outcome
    finally:
        if saved is None:
            local.unlink(missing_ok=True)
        else:
            local.write_text(saved)
        restored = stack.invoke("up", "--no-build", check=False)
        outcome.restored = restored.stdout
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]


def wait_for(what: str, within: float, check, detail, every: float = 5):
    """Call check() until it returns something true; returns (seconds taken, that value).
    After `within` seconds, fails naming `what` and what detail() says of the state."""
    start = time.time()
    while True:
        value = check()
        if value:
            return time.time() - start, value
        if time.time() - start > within:
            raise AssertionError(f"{what}: not within {within:.0f} s; {detail()}")
        time.sleep(every)


def alertmanager_alerts(stack, **labels: str) -> list[dict]:
    """Alertmanager's alerts whose labels equal `labels` (its API, from the monitoring network)."""
    from urllib.parse import quote
    flt = "&".join("filter=" + quote(f'{k}="{v}"') for k, v in labels.items())
    return prometheus_api(stack, f"http://alertmanager:9093/api/v2/alerts?{flt}")


def prometheus_api(stack, url: str) -> dict:
    """GET a JSON API on the monitoring network, from inside the Prometheus container
    (python3 is there; nothing of the monitoring network is published)."""
    code = ("import json,sys,urllib.request;"
            f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())")
    proc = stack.compose("exec", "-T", "prometheus", "python3", "-c", code)
    return json.loads(proc.stdout)


def prometheus_query(stack, promql: str) -> list[dict]:
    """An instant query's result vector."""
    from urllib.parse import quote
    body = prometheus_api(stack, f"http://127.0.0.1:9090/api/v1/query?query={quote(promql)}")
    assert body["status"] == "success", body
    return body["data"]["result"]
