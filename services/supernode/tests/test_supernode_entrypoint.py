"""services/supernode/entrypoint.py: the pure helpers (settings, node config, the
flower-supernode command line, key and CA checks, the detached-namespace test).

The entrypoint is loaded by path (it is a script, not a package). Keys are made with the
`cryptography` package in a temporary folder; the command line is also parsed with flwr's
own flower-supernode argument parser.
"""
from __future__ import annotations

import base64
import re
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from testcerts import load_entrypoint, make_ca, make_key, pem_cert, pem_key

ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint.py"
SITE = {"PARTITION_ID": "0", "NUM_PARTITIONS": "3"}


@pytest.fixture(scope="module")
def ep():
    return load_entrypoint(ENTRYPOINT, "supernode_entrypoint")


def no_files(_path) -> bool:
    return False


# ------------------------------------------------------------------ keys and CA files
def openssh(key) -> bytes:
    return pem_key(key, serialization.PrivateFormat.OpenSSH)


def passphrase_protected(key) -> bytes:
    """The key in OpenSSH's format as `ssh-keygen -N PASSPHRASE` writes it (aes256-ctr,
    bcrypt KDF). The secret part is random bytes: a loader without the passphrase stops
    at the header, and encrypting for real would need the bcrypt module."""
    def sshstr(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    def take(d: bytes) -> tuple[bytes, bytes]:
        n = struct.unpack(">I", d[:4])[0]
        return d[4:4 + n], d[4 + n:]

    magic = b"openssh-key-v1\0"
    data = base64.b64decode(b"".join(openssh(key).splitlines()[1:-1]))[len(magic):]
    for _ in range(3):                       # cipher "none", kdf "none", kdf options
        _, data = take(data)
    nkeys, data = data[:4], data[4:]
    public, data = take(data)
    secret, _ = take(data)
    blob = (magic + sshstr(b"aes256-ctr") + sshstr(b"bcrypt")
            + sshstr(sshstr(os.urandom(16)) + struct.pack(">I", 16)) + nkeys + sshstr(public)
            + sshstr(os.urandom(len(secret) + (-len(secret)) % 16)))
    b64 = base64.b64encode(blob)
    return (b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
            + b"\n".join(b64[i:i + 70] for i in range(0, len(b64), 70))
            + b"\n-----END OPENSSH PRIVATE KEY-----\n")


@pytest.fixture
def ec_key(tmp_path) -> Path:
    """What `invoke secrets.generate` makes: EC P-384, OpenSSH format, no passphrase."""
    path = tmp_path / "supernode_key"
    path.write_bytes(openssh(make_key(ec.SECP384R1())))
    return path


@pytest.fixture
def ca_file(tmp_path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(pem_cert(make_ca()[1]))
    return path


# ------------------------------------------------------------------ settings
def test_defaults_and_stripping(ep):
    s = ep.settings({"PARTITION_ID": " 1 ", "SUPERLINK_ADDRESS": ""})
    assert s["PARTITION_ID"] == "1"
    assert s["SUPERLINK_ADDRESS"] == "127.0.0.1:9443"     # empty keeps the default
    assert s["ROOT_CERTIFICATES"] == "/etc/fl/tls/ca.crt"
    assert ep.settings({"SUPERNODE_HEALTH_ADDRESS": ""})["SUPERNODE_HEALTH_ADDRESS"] == ""


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9443", ("127.0.0.1", 9443)),
    ("fleet.fl.localhost:443", ("fleet.fl.localhost", 443)),
    ("[::1]:9443", ("::1", 9443)),
])
def test_parse_address(ep, value, expected):
    assert ep.parse_address(value, "X") == expected


@pytest.mark.parametrize("value", ["9443", ":9443", "host:", "host:http", "host:0", "host:65536"])
def test_parse_address_rejects(ep, value):
    with pytest.raises(ValueError, match=r"^X=.* is not HOST:PORT$"):
        ep.parse_address(value, "X")


# ------------------------------------------------------------------ node config
def test_node_config(ep):
    assert ep.node_config(SITE) == "partition-id=0 num-partitions=3"
    extra = ep.node_config({**SITE, "NODE_CONFIG_EXTRA": 'region="eu" weight=2'})
    assert extra == 'partition-id=0 num-partitions=3 region="eu" weight=2'


def test_node_config_is_what_flwr_reads(ep):
    from flwr.common.config import parse_config_args

    text = ep.node_config({"PARTITION_ID": "2", "NUM_PARTITIONS": "4", "NODE_CONFIG_EXTRA": 'region="eu"'})
    assert parse_config_args([text]) == {"partition-id": 2, "num-partitions": 4, "region": "eu"}


@pytest.mark.parametrize("env, message", [
    ({"NUM_PARTITIONS": "3"}, "PARTITION_ID is not set"),
    ({"PARTITION_ID": "0"}, "NUM_PARTITIONS is not set"),
    ({"PARTITION_ID": "-1", "NUM_PARTITIONS": "3"}, "PARTITION_ID='-1' is not a non-negative integer"),
    ({"PARTITION_ID": "one", "NUM_PARTITIONS": "3"}, "PARTITION_ID='one' is not a non-negative integer"),
    ({"PARTITION_ID": "3", "NUM_PARTITIONS": "3"}, "PARTITION_ID=3 must be below NUM_PARTITIONS=3"),
    ({"PARTITION_ID": "5", "NUM_PARTITIONS": "3"}, "PARTITION_ID=5 must be below NUM_PARTITIONS=3"),
    ({"PARTITION_ID": "0", "NUM_PARTITIONS": "0"}, "PARTITION_ID=0 must be below NUM_PARTITIONS=0"),
    ({**SITE, "NODE_CONFIG_EXTRA": "region"}, "NODE_CONFIG_EXTRA item 'region' is not key=value"),
    ({**SITE, "NODE_CONFIG_EXTRA": "a.b=1"}, "NODE_CONFIG_EXTRA item 'a.b=1' is not key=value"),
    ({**SITE, "NODE_CONFIG_EXTRA": "partition-id=2"}, "NODE_CONFIG_EXTRA must not set partition-id"),
])
def test_node_config_errors_name_the_value(ep, env, message):
    with pytest.raises(ValueError) as err:
        ep.node_config(env)
    assert message in str(err.value)


# ------------------------------------------------------------------ the command line
def test_command_is_secure(ep):
    cmd = ep.build_command(SITE, exists=no_files)
    assert cmd[0] == "flower-supernode"
    assert "--insecure" not in cmd
    assert "--allow-runtime-dependency-installation" not in cmd
    pairs = dict(zip(cmd[1::], cmd[2::]))
    assert pairs["--superlink"] == "127.0.0.1:9443"
    assert pairs["--root-certificates"] == "/etc/fl/tls/ca.crt"
    assert pairs["--auth-supernode-private-key"] == "/etc/fl/site/supernode_key"
    assert pairs["--node-config"] == "partition-id=0 num-partitions=3"
    assert pairs["--isolation"] == "process"      # the warm launcher is its SuperExec
    assert pairs["--host"] == "127.0.0.1"          # its Runtime API stays on the loopback
    assert pairs["--port"] == "9094"
    assert pairs["--health-server-address"] == "127.0.0.1:9098"
    assert "--max-wait-time" not in cmd              # retry forever by default


def test_flwr_parses_the_command_as_intended(ep, monkeypatch):
    monkeypatch.delenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", raising=False)
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    args = _parse_args_run_supernode().parse_args(ep.build_command(SITE, exists=no_files)[1:])
    assert args.insecure is False
    assert args.root_certificates == "/etc/fl/tls/ca.crt"
    assert args.auth_supernode_private_key == "/etc/fl/site/supernode_key"
    assert args.superlink == "127.0.0.1:9443"
    assert args.runtime_dependency_install is False
    assert args.isolation == "process"
    assert (args.host, args.port) == ("127.0.0.1", 9094)
    flwrs = _parse_args_run_supernode().parse_args(
        ep.build_command({**SITE, "SUPERNODE_LAUNCHER": "flwr"}, exists=no_files)[1:])
    assert flwrs.isolation == "subprocess"          # flwr starts its own SuperExec


def test_the_launcher_settings_are_checked_before_the_start(ep):
    assert ep.launcher_settings({**SITE, "SUPERNODE_RUNTIME_PORT": "19101"}) == ("127.0.0.1:19101", ["numpy"], 1.0)
    assert ep.launcher_settings({**SITE, "SUPERNODE_PRELOAD": ""})[1] == []
    for bad, named in (({"SUPERNODE_LAUNCHER": "fast"}, "SUPERNODE_LAUNCHER='fast'"),
                       ({"SUPERNODE_PRELOAD": "numpy torch/x"}, "SUPERNODE_PRELOAD item 'torch/x'"),
                       ({"SUPERNODE_TASK_POLL_INTERVAL": "0"}, "SUPERNODE_TASK_POLL_INTERVAL='0'")):
        with pytest.raises(ValueError, match=re.escape(named)):
            ep.build_command({**SITE, **bad}, exists=no_files)
    # flwr's own SuperExec ignores the launcher's settings
    ep.build_command({**SITE, "SUPERNODE_LAUNCHER": "flwr", "SUPERNODE_PRELOAD": "x/y"}, exists=no_files)


def test_key_file_choice(ep):
    assert ep.key_file({}, exists=no_files) == "/etc/fl/site/supernode_key"
    assert ep.key_file({}, exists=lambda p: p == "/run/secrets/supernode_key") == "/run/secrets/supernode_key"
    assert ep.key_file({"SUPERNODE_KEY_FILE": "/k"}, exists=no_files) == "/k"


def test_optional_flags(ep):
    cmd = ep.build_command({**SITE, "SUPERNODE_HEALTH_ADDRESS": "", "SUPERNODE_MAX_WAIT_TIME": "30",
                            "SUPERNODE_EXTRA_ARGS": "--max-retries 5"}, exists=no_files)
    assert "--health-server-address" not in cmd
    assert cmd[cmd.index("--max-wait-time") + 1] == "30"
    assert cmd[-2:] == ["--max-retries", "5"]


@pytest.mark.parametrize("env, message", [
    ({"SUPERLINK_ADDRESS": "superlink"}, "SUPERLINK_ADDRESS='superlink' is not HOST:PORT"),
    ({"SUPERLINK_ADDRESS": "127.0.0.1:https"}, "SUPERLINK_ADDRESS='127.0.0.1:https' is not HOST:PORT"),
    ({"SUPERNODE_RUNTIME_PORT": "abc"}, "SUPERNODE_RUNTIME_PORT='abc' is not a port number"),
    ({"SUPERNODE_RUNTIME_PORT": "99999"}, "SUPERNODE_RUNTIME_PORT='99999' is not a port number"),
    ({"SUPERNODE_HEALTH_ADDRESS": "9098"}, "SUPERNODE_HEALTH_ADDRESS='9098' is not HOST:PORT"),
    ({"SUPERNODE_MAX_WAIT_TIME": "soon"}, "SUPERNODE_MAX_WAIT_TIME='soon' is not a number of seconds"),
    ({"SUPERNODE_MAX_WAIT_TIME": "-5"}, "SUPERNODE_MAX_WAIT_TIME must be positive"),
    ({"SUPERNODE_EXIT_WHEN_DETACHED": "maybe"}, "SUPERNODE_EXIT_WHEN_DETACHED='maybe': use 1 or 0"),
    ({"PARTITION_ID": "3"}, "PARTITION_ID=3 must be below NUM_PARTITIONS=3"),
    ({"SUPERNODE_HEALTH_RPC_INTERVAL": "1m"}, "SUPERNODE_HEALTH_RPC_INTERVAL='1m' is not a number of seconds"),
    ({"SUPERNODE_HEALTH_RPC_INTERVAL": "-1"}, "SUPERNODE_HEALTH_RPC_INTERVAL='-1' must be 0 or more"),
])
def test_bad_settings_are_named(ep, env, message):
    with pytest.raises(ValueError) as err:
        ep.build_command({**SITE, **env}, exists=no_files)
    assert message in str(err.value)


# ------------------------------------------------------------------ the key
def test_ec_key_passes(ep, ec_key):
    assert ep.key_problems(ec_key) == []


def test_missing_key(ep, tmp_path):
    problems = ep.key_problems(tmp_path / "nope")
    assert len(problems) == 1
    assert f"the SuperNode key {tmp_path / 'nope'} is missing" in problems[0]
    assert "secrets/supernodes/<org>.key" in problems[0]


def test_unreadable_key(ep, ec_key, monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    assert "is not readable by uid" in ep.key_problems(ec_key)[0]


def test_pem_key_is_not_openssh(ep, tmp_path):
    path = tmp_path / "k"
    path.write_bytes(pem_key(make_key(ec.SECP384R1())))
    assert "is not an OpenSSH private key" in ep.key_problems(path)[0]


@pytest.mark.parametrize("make, kind", [
    (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA"),
])
def test_keys_flwr_refuses(ep, tmp_path, make, kind):
    path = tmp_path / "k"
    path.write_bytes(openssh(make()))
    problems = ep.key_problems(path)
    assert len(problems) == 1
    assert f"is an {kind} key, not EC on a NIST curve" in problems[0]


def test_key_with_a_passphrase(ep, tmp_path):
    path = tmp_path / "k"
    path.write_bytes(passphrase_protected(make_key(ec.SECP384R1())))
    problems = ep.key_problems(path)
    assert len(problems) == 1 and "cannot be loaded without a passphrase" in problems[0]


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="no ssh-keygen here")
def test_keys_made_by_ssh_keygen(ep, tmp_path):
    good, locked = tmp_path / "good", tmp_path / "locked"
    for path, passphrase in ((good, ""), (locked, "secret")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", passphrase,
                        "-f", str(path)], check=True, capture_output=True)
    assert ep.key_problems(good) == []
    assert "cannot be loaded without a passphrase" in ep.key_problems(locked)[0]


# ------------------------------------------------------------------ the CA
def test_ca_file(ep, ca_file, tmp_path):
    assert ep.ca_problems(ca_file) == []
    assert "is missing; mount ca/deploy/org-<org>/ca.crt there" in ep.ca_problems(tmp_path / "none")[0]
    junk = tmp_path / "junk.crt"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert "is not a PEM CA certificate" in ep.ca_problems(junk)[0]


def test_check(ep, ec_key, ca_file, tmp_path):
    env = {**SITE, "SUPERNODE_KEY_FILE": str(ec_key), "ROOT_CERTIFICATES": str(ca_file)}
    assert ep.check(env) == []
    env["SUPERNODE_KEY_FILE"] = str(tmp_path / "missing.key")
    assert "is missing" in ep.check(env)[0]
    assert ep.check({**env, "PARTITION_ID": "9"}) == ["PARTITION_ID=9 must be below NUM_PARTITIONS=3"]


# ------------------------------------------------------------------ namespace
PROC_NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0
{extra}"""


def test_interfaces(ep):
    text = PROC_NET_DEV.format(extra="  eth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\n")
    assert ep.interfaces(text) == ["lo", "eth0"]


def test_attached_namespace(ep):
    assert not ep.detached(PROC_NET_DEV.format(extra="  eth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\n"))


def test_detached_namespace(ep):
    assert ep.detached(PROC_NET_DEV.format(extra=""))
    tunnels = "".join(f"  {d}: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n" for d in ("tunl0", "sit0", "ip6tnl0"))
    assert ep.detached(PROC_NET_DEV.format(extra=tunnels))


# ------------------------------------------------------------------ the script
OWN_VARIABLES = ("SUPERLINK_", "SUPERNODE_", "PARTITION_ID", "NUM_PARTITIONS", "NODE_CONFIG_",
                 "ROOT_CERTIFICATES")


def run(mode: str, **env: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)}
    return subprocess.run([sys.executable, str(ENTRYPOINT), mode], env={**keep, **env},
                          capture_output=True, text=True, timeout=60)


def test_script_command_mode():
    out = run("command", **SITE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("flower-supernode ") and "--insecure" not in out.stdout


def test_script_command_mode_names_a_bad_partition():
    out = run("command", PARTITION_ID="3", NUM_PARTITIONS="3")
    assert out.returncode == 2
    assert "supernode entrypoint: PARTITION_ID=3 must be below NUM_PARTITIONS=3" in out.stderr
    assert "Traceback" not in out.stderr


def test_script_check_mode(ec_key, ca_file, tmp_path):
    ok = run("check", SUPERNODE_KEY_FILE=str(ec_key), ROOT_CERTIFICATES=str(ca_file), **SITE)
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    bad = run("check", SUPERNODE_KEY_FILE=str(tmp_path / "gone"), ROOT_CERTIFICATES=str(ca_file), **SITE)
    assert bad.returncode == 2
    assert f"cannot start:\n  - the SuperNode key {tmp_path / 'gone'} is missing" in bad.stderr


# ---- a SuperNode that broke without exiting is stopped by its healthcheck
def test_consecutive_health_failures_are_counted_and_reset(ep, tmp_path):
    state = tmp_path / "failures"
    assert [ep.record_failure(state) for _ in range(3)] == [1, 2, 3]
    assert ep.record_failure(state, reset=True) == 0
    assert ep.record_failure(state) == 1


def test_a_silent_supernode_is_stopped_then_killed(ep):
    s = ep.settings({})
    sent = []
    kill = lambda pid, sig: sent.append((pid, sig))  # noqa: E731
    find = lambda: [42]  # noqa: E731
    assert ep.stop_when_broken(s, 2, kill, find) == "" and sent == []
    assert ep.stop_when_broken(s, 3, kill, find) == "term"
    assert sent == [(1, ep.signal.SIGTERM)]
    assert ep.stop_when_broken(s, 5, kill, find) == "kill"
    assert sent[-1] == (42, ep.signal.SIGKILL)
    assert ep.stop_when_broken(ep.settings({"SUPERNODE_EXIT_AFTER_FAILURES": "0"}), 9, kill, find) == ""


def test_a_readiness_probe_only_observes(ep, tmp_path, monkeypatch):
    """`invoke up` runs this healthcheck every half second while a SuperNode starts
    (FL_HEALTH_OBSERVE_ONLY=1): its failures must not count towards stopping it."""
    import socket
    state = tmp_path / "failures"
    monkeypatch.setattr(ep, "FAILURES_FILE", state)
    with socket.socket() as listener, socket.socket() as unused:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unused.bind(("127.0.0.1", 0))   # bound, not listening: the health service is silent
        env = {"SUPERLINK_ADDRESS": f"127.0.0.1:{listener.getsockname()[1]}",
               "SUPERNODE_HEALTH_ADDRESS": f"127.0.0.1:{unused.getsockname()[1]}"}
        for _ in range(5):
            assert ep.healthcheck({**env, ep.OBSERVE_ONLY: "1"}, timeout=0.5) == 1
        assert not state.exists()
        assert ep.healthcheck(env, timeout=0.5) == 1   # never healthy yet: still starting
        assert not state.exists()
        ep.record_failure(state, reset=True)           # as after its first healthy check
        assert ep.healthcheck(env, timeout=0.5) == 1   # Docker's own healthcheck counts
        assert state.read_text().strip() == "1"


@pytest.fixture
def health_server():
    """A real gRPC health service (grpcio's, the one flwr serves) on a free port; the
    test sets its status."""
    import grpc
    from concurrent import futures
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield port, lambda serving: servicer.set(
        "", health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING)
    server.stop(None)


def test_the_health_call_is_made_once_per_interval_while_it_succeeds(ep, tmp_path, monkeypatch, health_server):
    """Docker's check between two calls only connects to the health port; a readiness
    probe, a due check and every check after a failed call make the call."""
    import socket
    port, set_serving = health_server
    monkeypatch.setattr(ep, "FAILURES_FILE", tmp_path / "failures")
    monkeypatch.setattr(ep, "RPC_OK_FILE", tmp_path / "rpc-ok")
    with socket.socket() as fleet:
        fleet.bind(("127.0.0.1", 0))
        fleet.listen()
        env = {"SUPERLINK_ADDRESS": f"127.0.0.1:{fleet.getsockname()[1]}",
               "SUPERNODE_HEALTH_ADDRESS": f"127.0.0.1:{port}"}
        assert ep.healthcheck(env, timeout=2) == 0           # the first check calls
        assert (tmp_path / "rpc-ok").exists()
        set_serving(False)
        assert ep.healthcheck(env, timeout=2) == 0           # within the interval: no call
        assert ep.healthcheck({**env, ep.OBSERVE_ONLY: "1"}, timeout=2) == 1   # readiness calls
        assert ep.healthcheck({**env, "SUPERNODE_HEALTH_RPC_INTERVAL": "0"}, timeout=2) == 1
        old = ep.time.time() - 61
        os.utime(tmp_path / "rpc-ok", (old, old))
        assert ep.healthcheck(env, timeout=2) == 1           # due: the call sees NOT_SERVING
        set_serving(True)
        assert ep.healthcheck(env, timeout=2) == 0
        assert ep.rpc_due(60, ep.time.time(), tmp_path / "rpc-ok") is False


def test_a_closed_health_port_fails_at_once_and_counts(ep, tmp_path, monkeypatch, health_server):
    """The silent SuperNode: its health port closed. Every check fails (no waiting for the
    next call) and counts towards stopping it; the next checks call again."""
    import socket
    port, _ = health_server
    monkeypatch.setattr(ep, "FAILURES_FILE", tmp_path / "failures")
    monkeypatch.setattr(ep, "RPC_OK_FILE", tmp_path / "rpc-ok")
    with socket.socket() as fleet, socket.socket() as closed:
        fleet.bind(("127.0.0.1", 0))
        fleet.listen()
        closed.bind(("127.0.0.1", 0))
        env = {"SUPERLINK_ADDRESS": f"127.0.0.1:{fleet.getsockname()[1]}",
               "SUPERNODE_HEALTH_ADDRESS": f"127.0.0.1:{port}", "SUPERNODE_EXIT_AFTER_FAILURES": "0"}
        assert ep.healthcheck(env, timeout=2) == 0
        env["SUPERNODE_HEALTH_ADDRESS"] = f"127.0.0.1:{closed.getsockname()[1]}"
        assert ep.healthcheck(env, timeout=0.5) == 1
        assert ep.healthcheck(env, timeout=0.5) == 1
        assert (tmp_path / "failures").read_text() == "2"
        assert not (tmp_path / "rpc-ok").exists()
        assert ep.rpc_due(60, ep.time.time(), tmp_path / "rpc-ok") is True


def test_rpc_due(ep, tmp_path):
    ok = tmp_path / "rpc-ok"
    assert ep.rpc_due(60, 1000.0, ok) is True                 # never succeeded
    ok.touch()
    os.utime(ok, (1000.0, 1000.0))
    assert ep.rpc_due(60, 1030.0, ok) is False
    assert ep.rpc_due(60, 1060.0, ok) is True
    assert ep.rpc_due(60, 990.0, ok) is True                  # clock went back
    assert ep.rpc_due(0, 1001.0, ok) is True
