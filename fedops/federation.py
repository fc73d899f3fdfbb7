"""Flower federation operations: SuperNode key registration, runs and status.

Administration runs the flwr CLI inside the SuperLink's container, against its Control
API on 127.0.0.1 over TLS (verified against the project CA): inside the trust boundary,
never through the public edge. Researchers use the edge with single sign-on instead
(`invoke fl.connection`, then `flwr login`).
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass

from . import compose, paths, secrets
from .config import Federation
from .errors import FedopsError

ADMIN_HOME = "/tmp/flwr-admin"
# The SuperLink's SQLite state in its container (services/superlink: SUPERLINK_DATABASE).
SUPERLINK_STATE_DB = "/data/state.db"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ADMIN_CONNECTION = "admin"
APPS_IN_CONTAINER = "/apps"

# Written before every admin command: the CLI reads its connections from FLWR_HOME.
ADMIN_CONFIG = f"""[superlink]
default = "{ADMIN_CONNECTION}"

[superlink.{ADMIN_CONNECTION}]
address = "127.0.0.1:8000"
root-certificates = "/etc/fl/tls/ca.crt"
"""


def admin_argv(flwr_args: list[str]) -> list[str]:
    """`docker compose exec superlink` running one flwr CLI command as the admin."""
    script = (f"mkdir -p {ADMIN_HOME} && cat > {ADMIN_HOME}/config.toml <<'EOF'\n{ADMIN_CONFIG}EOF\n"
              f"exec flwr {shlex.join(flwr_args)}")
    return [*compose.argv(), "exec", "-T", "-e", f"FLWR_HOME={ADMIN_HOME}", "superlink", "sh", "-c", script]


def admin(flwr_args: list[str], stdin: str | None = None, check: bool = True,
          timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(admin_argv(flwr_args), input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=compose.environment())
    if check and proc.returncode != 0:
        raise FedopsError(f"flwr {' '.join(flwr_args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-800:]}",
                          "is the SuperLink up? `invoke status`, `invoke logs --service superlink`")
    return proc


def parse_json(text: str) -> dict:
    """The CLI prints JSON (possibly after other lines): take the last JSON object."""
    start = text.find("{")
    if start < 0:
        raise FedopsError(f"flwr printed no JSON: {text.strip()[-300:]}", "see `invoke logs --service superlink`")
    return json.loads(text[start:])


# ---------------------------------------------------------------- SuperNodes
def register(org_name: str) -> str:
    """Register an organisation's SuperNode public key; returns "registered" or "already"."""
    pub = (paths.SECRETS_DIR / secrets.SUPERNODE_KEYS / f"{org_name}.pub").read_text()
    return register_key(pub, org_name)[0]


def register_key(public_key: str, name: str) -> tuple[str, str | None]:
    """Register a SuperNode public key (OpenSSH text) under a name; returns
    ("registered", node id) or ("already", None) when the key is registered already."""
    if not NAME_RE.match(name):
        raise FedopsError(f"{name!r} is not a usable SuperNode name", "use letters, digits, '-' and '_'")
    key_in_ctr = f"/tmp/{name}.pub"
    script_args = ["supernode", "register", key_in_ctr, "--name", name, "--format", "json"]
    argv = admin_argv(script_args)
    # put the public key into the container first (stdin), then register it
    argv[-1] = f"cat > {key_in_ctr} && " + argv[-1]
    proc = subprocess.run(argv, input=public_key, capture_output=True, text=True, timeout=120,
                          env=compose.environment())
    out = proc.stdout + proc.stderr
    if "already in use" in out:
        return "already", None
    try:
        data = parse_json(proc.stdout)
    except (FedopsError, json.JSONDecodeError):
        data = {}
    if proc.returncode != 0 or not data.get("success", False):
        raise FedopsError(f"registering the SuperNode {name} failed: {out.strip()[-600:]}",
                          "check `invoke logs --service superlink`")
    return "registered", (str(data["node-id"]) if data.get("node-id") is not None else None)


def unregister(node_id: str) -> None:
    """Unregister a SuperNode (by node id): its key can no longer connect."""
    admin(["supernode", "unregister", str(node_id), ADMIN_CONNECTION, "--format", "json"])


def registered_keys() -> set[bytes] | None:
    """The public keys (PEM, as the SuperLink stores them) of every SuperNode not
    unregistered, read from its state in one exec; None when unreadable."""
    proc = compose.call("exec", "-T", "superlink", "python3", "-c", REGISTERED_KEYS_PY, timeout=60)
    try:
        return {k.encode() for k in json.loads(proc.stdout)} if proc.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def pem_of(openssh_public_key: str) -> bytes:
    """An OpenSSH public key in the form the SuperLink stores (PEM SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_ssh_public_key(openssh_public_key.encode())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def register_all(c, fed: Federation) -> None:
    """Register every organisation's SuperNode key with the SuperLink (idempotent).
    Keys the SuperLink holds already are found in one read of its state, so an
    unchanged federation costs one exec, not a CLI call per organisation."""
    known = registered_keys() or set()
    results = {}
    for org in fed.organisations:
        pub = (paths.SECRETS_DIR / secrets.SUPERNODE_KEYS / f"{org.name}.pub").read_text()
        results[org.name] = "already" if pem_of(pub) in known else register(org.name)
    print("    SuperNode keys: " + ", ".join(f"{k} {v}" for k, v in results.items()), flush=True)


@dataclass
class Node:
    node_id: str
    status: str
    online_at: str
    name: str = ""      # the organisation it was registered for (`--name`)


# `flwr supernode list` does not show the name given at registration; the SuperLink's
# state has it. Read-only query of its SQLite file, inside its container.
NODE_NAMES_PY = ("import json,sqlite3;"
                 f"c=sqlite3.connect('file:{SUPERLINK_STATE_DB}?mode=ro',uri=True);"
                 "print(json.dumps({str(i % 2**64): n for i, n in c.execute('select node_id, name from node')}))")


REGISTERED_KEYS_PY = ("import json,sqlite3;"
                      f"c=sqlite3.connect('file:{SUPERLINK_STATE_DB}?mode=ro',uri=True);"
                      "print(json.dumps([bytes(k).decode() for (k,) in c.execute("
                      "\"select public_key from node where status != 'unregistered'\")]))")


def node_names() -> dict[str, str]:
    """node id (as the CLI prints it) -> registered name; {} when unreadable."""
    proc = compose.call("exec", "-T", "superlink", "python3", "-c", NODE_NAMES_PY, timeout=60)
    try:
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except json.JSONDecodeError:
        return {}


def nodes() -> list[Node]:
    data = parse_json(admin(["supernode", "list", "--format", "json"]).stdout)
    names = node_names()
    return [Node(n["node-id"], n["status"], n.get("online-at") or "", names.get(str(n["node-id"]), ""))
            for n in data.get("nodes", [])]


# ---------------------------------------------------------------- runs
def runs() -> list[dict]:
    data = parse_json(admin(["ls", "--format", "json"]).stdout)
    return data.get("runs", [])


def run_status(run_id: str) -> dict:
    data = parse_json(admin(["ls", "--run-id", run_id, "--format", "json"]).stdout)
    found = data.get("runs", [])
    if not found:
        raise FedopsError(f"run {run_id} is unknown to the SuperLink", "`invoke fl.status` lists the runs")
    return found[0]


def run_config(rounds: int, overrides: dict | None = None) -> str:
    """The --run-config value: num-server-rounds plus overrides (values in TOML syntax:
    strings quoted)."""
    items = {"num-server-rounds": rounds, **(overrides or {})}
    parts = []
    for key, value in items.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, str):
            value = json.dumps(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


def submit(app: str, rounds: int, overrides: dict | None = None) -> str:
    """Start a run of the app (a folder under ./apps); returns the run id. `overrides`
    are more run-config values (e.g. {"min-nodes": 6})."""
    args = ["run", f"{APPS_IN_CONTAINER}/{app}", ADMIN_CONNECTION, "--format", "json",
            "--run-config", run_config(rounds, overrides)]
    data = parse_json(admin(args, timeout=300).stdout)
    if not data.get("success") or not data.get("run-id"):
        raise FedopsError(f"the SuperLink did not start the run: {data}", "see `invoke logs --service superlink`")
    return data["run-id"]


def stop(run_id: str) -> None:
    """Ask the SuperLink to stop a run (no error when it has finished already)."""
    admin(["stop", str(run_id), ADMIN_CONNECTION], check=False, timeout=60)


def follow(run_id: str, on_line=print, timeout: float = 1800, *, log_argv: list[str] | None = None,
           status=None, env: dict[str, str] | None = None) -> dict:
    """Stream the run's log until it finishes (or `timeout` seconds pass); return its
    final status row. `log_argv` (run with `env`) and `status` replace the admin's
    `flwr log --stream` and `run_status` (e.g. for another SuperLink)."""
    argv = log_argv or admin_argv(["log", run_id, ADMIN_CONNECTION, "--stream"])
    status = status or run_status
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env or compose.environment()) as proc:
        # a silent stream (a run waiting for nodes) must not outlive the timeout either
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
        finally:
            watchdog.cancel()
            proc.kill()
    # `flwr log --stream` ends with the run, or earlier when the SuperLink drops it under
    # load; the run's status is the truth (`flwr run` exits 0 even for failed runs),
    # waited for until the time-out (at least a minute).
    return wait_finished(run_id, timeout=max(60.0, timeout - (time.monotonic() - started)), status=status)


def wait_finished(run_id: str, timeout: float = 600, status=None, poll: float = 2) -> dict:
    """Poll the run's status row until it is finished:* or `timeout` seconds pass; return
    the last row. `status` replaces `run_status` (e.g. the flwr CLI through the edge)."""
    status = status or run_status
    deadline = time.time() + timeout
    while True:
        row = status(run_id)
        if row["status"].startswith("finished") or time.time() > deadline:
            return row
        time.sleep(poll)


# ---------------------------------------------------------------- researchers' connection
def connection_toml(name: str, fed: Federation, ca_path: str, port: int | None = None) -> str:
    port = port or int(compose.settings().get("FL_HTTPS_PORT", "443"))
    return (f'[superlink.{name}]\naddress = "{fed.hostname("control")}:{port}"\n'
            f'root-certificates = "{ca_path}"\n')


def write_connection(home, name: str, fed: Federation):
    """Add or replace [superlink.NAME] in HOME/config.toml, keeping everything else."""
    import tomllib
    from pathlib import Path
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    text = path.read_text() if path.exists() else ""
    if text:
        tomllib.loads(text)   # refuse to edit a file we cannot read
    # drop an earlier [superlink.NAME] table (up to the next table header)
    text = re.sub(rf"(?ms)^\[superlink\.{re.escape(name)}\]\n.*?(?=^\[|\Z)", "", text)
    if "[superlink]" not in text:
        text = f'[superlink]\ndefault = "{name}"\n\n' + text
    text = text.rstrip() + "\n\n" + connection_toml(name, fed, str(paths.PKI_DIR / "ca.crt"))
    path.write_text(text)
    tomllib.loads(text)
    return path
