#!/usr/bin/env python3
"""Entrypoint of a SuperNode container (Flower 1.42 `flower-supernode`), one per
organisation.

Usage (the image's ENTRYPOINT is ``python3 /usr/local/bin/entrypoint.py``; ``python3``
is Debian's, through the venv in /opt/venv):

    entrypoint.py              validate the key, the CA and the settings, then run the warm
                               ClientApp launcher (launcher.py), which starts
                               flower-supernode --isolation process as its child; with
                               SUPERNODE_LAUNCHER=flwr exec flower-supernode instead
    entrypoint.py check        validate only; exit 0 when all is well
    entrypoint.py command      print the flower-supernode command line (no file checks)
    entrypoint.py healthcheck  the SuperNode's gRPC health service says SERVING (asked
                               once per SUPERNODE_HEALTH_RPC_INTERVAL while it does; the
                               checks between connect to its port) and its Fleet address
                               (the site proxy on the loopback) accepts connections;
                               exit 0 when both hold. When the network
                               namespace is detached (the proxy was restarted), it also
                               stops the SuperNode so that it is restarted in the new one

The SuperNode shares the network namespace of its site proxy (services/siteproxy): it
talks HTTPS to the proxy on 127.0.0.1 (verified against the project CA: the proxy
presents the organisation's certificate, whose SANs include 127.0.0.1), and the proxy
carries the traffic to the edge's fleet host with the organisation's client certificate.

Importing this module has no side effects: ``settings``, ``node_config``,
``build_command``, ``key_problems``, ``parse_address``, ``interfaces`` and ``detached``
are pure (or read-only) helpers for unit tests.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Mapping

DEFAULTS = {
    # The Fleet API as this SuperNode sees it: the site proxy on the loopback.
    "SUPERLINK_ADDRESS": "127.0.0.1:9443",
    # CA bundle that verifies the site proxy's certificate (the project CA).
    "ROOT_CERTIFICATES": "/etc/fl/tls/ca.crt",
    # The organisation's SuperNode authentication key (OpenSSH EC private key, no
    # passphrase); its .pub is registered with `flwr supernode register`. The first of
    # these that exists is used when SUPERNODE_KEY_FILE is unset.
    "SUPERNODE_KEY_FILE": "",
    # Node config handed to every ClientApp (the data partition of this site).
    "PARTITION_ID": "",
    "NUM_PARTITIONS": "",
    # More node config, space-separated key=value, values in TOML syntax (strings
    # quoted: region="eu" weight=2), appended after the partition.
    "NODE_CONFIG_EXTRA": "",
    # The SuperNode's own Runtime (ClientAppIo) API, plain HTTP on the loopback.
    "SUPERNODE_RUNTIME_PORT": "9094",
    # Plain gRPC health service; empty disables it (and that half of the healthcheck).
    "SUPERNODE_HEALTH_ADDRESS": "127.0.0.1:9098",
    # flwr's --max-wait-time: stop reconnecting after this many seconds. Empty (the
    # default) = retry forever. Careful: flwr 1.42 does not exit after giving up, it
    # idles for good, so a finite value needs an external restart.
    "SUPERNODE_MAX_WAIT_TIME": "",
    # "1": when the healthcheck finds this container's network namespace detached
    # (only a loopback left: its site proxy, which owns the namespace, was restarted),
    # it stops the SuperNode so that the restart policy starts it again in the
    # proxy's new namespace. "0": only report unhealthy.
    "SUPERNODE_EXIT_WHEN_DETACHED": "1",
    # Stop the SuperNode after this many consecutive healthchecks found its health
    # service silent (it broke without exiting); 0 = never.
    "SUPERNODE_EXIT_AFTER_FAILURES": "3",
    # Seconds between the healthcheck's gRPC calls to the health service while they
    # succeed; the checks in between only connect to its port (importing grpc costs
    # ~0.13 CPU-s, at every 10 s check 1.3 % of a core per SuperNode). After a failed
    # call every check makes the call again. 0 = the call at every check.
    "SUPERNODE_HEALTH_RPC_INTERVAL": "60",
    "SUPERNODE_EXTRA_ARGS": "",
    # Who starts the ClientApps. "warm" (default): this container's main process
    # (launcher.py) runs flower-supernode with --isolation process and forks every
    # message's ClientApp from a process that has imported flwr and SUPERNODE_PRELOAD
    # (about 2 CPU-s less per message). "flwr": flwr's own SuperExec
    # (--isolation subprocess), a new flwr-clientapp process that imports everything
    # again for every message.
    "SUPERNODE_LAUNCHER": "warm",
    # Modules the warm launcher imports once for all ClientApps (spaces or commas): the
    # libraries of the apps this site runs. Do not preload one that starts threads or a
    # GPU context at import (CUDA cannot be used in a forked child once initialised).
    "SUPERNODE_PRELOAD": "numpy",
    # Seconds between the warm launcher's requests for a task (flwr's SuperExec: 1 s).
    "SUPERNODE_TASK_POLL_INTERVAL": "1",
}
KEY_CANDIDATES = ("/etc/fl/site/supernode_key", "/run/secrets/supernode_key")

FIXED_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}

# Devices the kernel puts into every new network namespace when the tunnel modules are
# loaded; they are no connection to anything.
FALLBACK_DEVICES = {"tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip_vti0",
                    "ip6_vti0", "ip6gre0"}

NODE_CONFIG_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
NIST_CURVES = {"secp256r1", "secp384r1", "secp521r1"}


def fail(message: str, code: int = 2) -> None:
    print(f"supernode entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def settings(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in env:
            value = env[key].strip()
            if value or key in ("SUPERNODE_HEALTH_ADDRESS", "SUPERNODE_MAX_WAIT_TIME",
                                "NODE_CONFIG_EXTRA", "SUPERNODE_EXTRA_ARGS", "SUPERNODE_PRELOAD"):
                out[key] = value
    return out


def parse_address(value: str, name: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError naming the variable."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}={value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def key_file(env: Mapping[str, str], exists=os.path.exists) -> str:
    s = settings(env)
    if s["SUPERNODE_KEY_FILE"]:
        return s["SUPERNODE_KEY_FILE"]
    for candidate in KEY_CANDIDATES:
        if exists(candidate):
            return candidate
    return KEY_CANDIDATES[0]


def node_config(env: Mapping[str, str]) -> str:
    """'partition-id=N num-partitions=M [extra]' (ValueError naming the bad value)."""
    s = settings(env)
    for name in ("PARTITION_ID", "NUM_PARTITIONS"):
        if not s[name]:
            raise ValueError(f"{name} is not set: each site needs its data partition "
                             "(PARTITION_ID=0.., NUM_PARTITIONS=number of sites)")
        if not s[name].isdigit():
            raise ValueError(f"{name}={s[name]!r} is not a non-negative integer")
    pid, num = int(s["PARTITION_ID"]), int(s["NUM_PARTITIONS"])
    if num < 1 or pid >= num:
        raise ValueError(f"PARTITION_ID={pid} must be below NUM_PARTITIONS={num}")
    parts = [f"partition-id={pid}", f"num-partitions={num}"]
    for item in s["NODE_CONFIG_EXTRA"].split():
        key, sep, value = item.partition("=")
        if not sep or not NODE_CONFIG_KEY.match(key):
            raise ValueError(f"NODE_CONFIG_EXTRA item {item!r} is not key=value")
        if key in ("partition-id", "num-partitions"):
            raise ValueError(f"NODE_CONFIG_EXTRA must not set {key}: use PARTITION_ID/NUM_PARTITIONS")
        parts.append(f"{key}={value}")
    return " ".join(parts)


def build_command(env: Mapping[str, str], exists=os.path.exists) -> list[str]:
    """The flower-supernode argv for these settings (raises ValueError on bad values)."""
    s = settings(env)
    parse_address(s["SUPERLINK_ADDRESS"], "SUPERLINK_ADDRESS")
    runtime_port = s["SUPERNODE_RUNTIME_PORT"]
    if not runtime_port.isdigit() or not 0 < int(runtime_port) < 65536:
        raise ValueError(f"SUPERNODE_RUNTIME_PORT={runtime_port!r} is not a port number")
    mode = launcher_mode(env)
    cmd = [
        "flower-supernode",
        "--superlink", s["SUPERLINK_ADDRESS"],
        "--root-certificates", s["ROOT_CERTIFICATES"],
        "--auth-supernode-private-key", key_file(env, exists),
        "--node-config", node_config(env),
        "--isolation", "process" if mode == "warm" else "subprocess",
        "--host", "127.0.0.1",
        "--port", runtime_port,
    ]
    if s["SUPERNODE_HEALTH_ADDRESS"]:
        parse_address(s["SUPERNODE_HEALTH_ADDRESS"], "SUPERNODE_HEALTH_ADDRESS")
        cmd += ["--health-server-address", s["SUPERNODE_HEALTH_ADDRESS"]]
    if s["SUPERNODE_EXIT_WHEN_DETACHED"].lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"SUPERNODE_EXIT_WHEN_DETACHED={s['SUPERNODE_EXIT_WHEN_DETACHED']!r}: use 1 or 0")
    rpc_interval(s)
    if mode == "warm":
        launcher_settings(env)
    if s["SUPERNODE_MAX_WAIT_TIME"]:
        try:
            wait = float(s["SUPERNODE_MAX_WAIT_TIME"])
        except ValueError:
            raise ValueError(f"SUPERNODE_MAX_WAIT_TIME={s['SUPERNODE_MAX_WAIT_TIME']!r} "
                             "is not a number of seconds") from None
        if wait <= 0:
            raise ValueError("SUPERNODE_MAX_WAIT_TIME must be positive (or empty: forever)")
        cmd += ["--max-wait-time", s["SUPERNODE_MAX_WAIT_TIME"]]
    cmd += shlex.split(s["SUPERNODE_EXTRA_ARGS"])
    return cmd


LAUNCHERS = ("warm", "flwr")


def launcher_mode(env: Mapping[str, str]) -> str:
    mode = settings(env)["SUPERNODE_LAUNCHER"].lower()
    if mode not in LAUNCHERS:
        raise ValueError(f"SUPERNODE_LAUNCHER={mode!r}: use warm (ClientApps forked from a "
                         "process holding the imports) or flwr (flwr's own SuperExec)")
    return mode


def launcher_module():
    """launcher.py beside this file (the image's /usr/local/bin; a script folder in tests)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import launcher
    return launcher


def launcher_settings(env: Mapping[str, str]) -> tuple[str, list[str], float]:
    """(the Runtime API address, the modules to preload, the task poll interval) of the
    warm launcher (ValueError naming a bad value)."""
    launcher = launcher_module()
    s = settings(env)
    return (f"127.0.0.1:{s['SUPERNODE_RUNTIME_PORT']}", launcher.preload_modules(s["SUPERNODE_PRELOAD"]),
            launcher.poll_interval(s["SUPERNODE_TASK_POLL_INTERVAL"]))


def key_problems(path: Path) -> list[str]:
    """The key must be an unencrypted OpenSSH private key on a NIST EC curve (flwr
    refuses Ed25519 and RSA)."""
    if not path.is_file():
        return [f"the SuperNode key {path} is missing; mount secrets/supernodes/<org>.key "
                "there (made by invoke secrets.generate)"]
    if not os.access(path, os.R_OK):
        return [f"the SuperNode key {path} is not readable by uid {os.getuid()}; "
                "it must belong to uid 10050 (invoke up sets the owner)"]
    data = path.read_bytes()
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" not in data:
        return [f"{path} is not an OpenSSH private key (make one with: "
                "ssh-keygen -t ecdsa -b 384 -N '' -f KEY)"]
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    except ImportError:  # outside the image: the format check above must do
        return []
    try:
        key = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        return [f"{path} cannot be loaded without a passphrase: {exc}"]
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in NIST_CURVES:
        kind = getattr(getattr(key, "curve", None), "name", None) or \
            type(key).__name__.removesuffix("PrivateKey").lstrip("_")
        return [f"{path} is an {kind} key, not EC on a NIST curve, which flwr needs "
                "(ssh-keygen -t ecdsa -b 384)"]
    return []


def ca_problems(path: Path) -> list[str]:
    if not path.is_file():
        return [f"the CA certificate {path} is missing; mount ca/deploy/org-<org>/ca.crt there"]
    import ssl  # here, not at the top: its import is half the cost of a healthcheck

    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        return [f"{path} is not a PEM CA certificate: {exc}"]
    return []


def check(env: Mapping[str, str]) -> list[str]:
    try:
        build_command(env)
    except ValueError as exc:
        return [str(exc)]
    s = settings(env)
    return key_problems(Path(key_file(env))) + ca_problems(Path(s["ROOT_CERTIFICATES"]))


def interfaces(proc_net_dev: str) -> list[str]:
    """Interface names of a /proc/net/dev text (the reader's network namespace)."""
    names = []
    for line in proc_net_dev.splitlines()[2:]:
        name, sep, _ = line.partition(":")
        if sep:
            names.append(name.strip())
    return names


def detached(proc_net_dev: str) -> bool:
    """True when the namespace has nothing but a loopback: the container that owned it
    (the site proxy) was restarted and this one still sits in the old namespace, where
    it can never reach anything again."""
    return all(name == "lo" or name in FALLBACK_DEVICES for name in interfaces(proc_net_dev))


# Set by `invoke up` when it runs this healthcheck to see whether the SuperNode is
# ready yet (fedops/engine.py): it then only observes. Only Docker's own healthcheck,
# at its interval, counts failures and stops a broken SuperNode.
OBSERVE_ONLY = "FL_HEALTH_OBSERVE_ONLY"


def healthcheck(env: Mapping[str, str], timeout: float = 2.5) -> int:
    s = settings(env)
    observe = env.get(OBSERVE_ONLY, "") == "1"
    host, port = parse_address(s["SUPERLINK_ADDRESS"], "SUPERLINK_ADDRESS")
    try:
        if detached(Path("/proc/net/dev").read_text()):
            print("network namespace detached (the site proxy was restarted)", file=sys.stderr)
            if s["SUPERNODE_EXIT_WHEN_DETACHED"].lower() in ("1", "true", "yes", "on") and not observe:
                print("stopping the SuperNode: the restart policy starts it again in the "
                      "site proxy's namespace", file=sys.stderr)
                os.kill(1, signal.SIGTERM)
            return 1
    except OSError:
        pass
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        print(f"the Fleet address {s['SUPERLINK_ADDRESS']} (site proxy) refuses: {exc}",
              file=sys.stderr)
        return 1
    if s["SUPERNODE_HEALTH_ADDRESS"]:
        hhost, hport = parse_address(s["SUPERNODE_HEALTH_ADDRESS"], "SUPERNODE_HEALTH_ADDRESS")
        if hhost in ("0.0.0.0", "::", ""):
            hhost = "127.0.0.1"
        try:
            socket.create_connection((hhost, hport), timeout=timeout).close()
            # `invoke up`'s readiness probe always makes the call; Docker's check when due
            if observe or rpc_due(rpc_interval(s), time.time()):
                if not health_rpc(hhost, hport, timeout):
                    return 1
                if not observe:
                    RPC_OK_FILE.touch()
        except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
            print(f"gRPC health on {hhost}:{hport}: {exc}", file=sys.stderr)
            if not observe:
                RPC_OK_FILE.unlink(missing_ok=True)
                # only a SuperNode that has answered before can have gone silent: one
                # still importing flwr on a busy machine is left to start
                if FAILURES_FILE.exists():
                    stop_when_broken(s, record_failure(FAILURES_FILE))
            return 1
    if not observe:
        record_failure(FAILURES_FILE, reset=True)
    return 0


def health_rpc(host: str, port: int, timeout: float) -> bool:
    """True when the gRPC health service answers SERVING (raises when it does not answer)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"gRPC health: {reply.status}", file=sys.stderr)
        return False
    return True


# When the last successful health call was made (the file's modification time).
RPC_OK_FILE = Path("/tmp/supernode-health-rpc-ok")


def rpc_interval(s: Mapping[str, str]) -> float:
    value = s["SUPERNODE_HEALTH_RPC_INTERVAL"]
    try:
        seconds = float(value or 0)
    except ValueError:
        raise ValueError(f"SUPERNODE_HEALTH_RPC_INTERVAL={value!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"SUPERNODE_HEALTH_RPC_INTERVAL={value!r} must be 0 or more seconds")
    return seconds


def rpc_due(interval: float, now: float, path: Path | None = None) -> bool:
    """Whether this check calls the health service: at every check when interval is 0,
    when no call has succeeded yet or since the last failure, and `interval` seconds
    after the last successful one."""
    if interval <= 0:
        return True
    try:
        last = (path or RPC_OK_FILE).stat().st_mtime
    except OSError:
        return True
    return not 0 <= now - last < interval


# flwr 1.42's SuperNode does not exit when its Fleet connection breaks for good (for
# example a 400 from the edge after its organisation's certificate was revoked): its
# threads stop, the process stays, its health service stops answering. Docker does not
# restart unhealthy containers, so the healthcheck counts consecutive health-service
# failures and stops the SuperNode after SUPERNODE_EXIT_AFTER_FAILURES of them; the
# restart policy then starts a fresh one (which keeps failing until the cause is fixed,
# e.g. `invoke ca.reinstate ORG` and `invoke up`). The file is written at the first
# healthy check: failures before it are a SuperNode still starting, and do not count.
FAILURES_FILE = Path("/tmp/supernode-health-failures")


def record_failure(path: Path, reset: bool = False) -> int:
    """Consecutive failures so far (0 after a reset)."""
    count = 0
    if not reset:
        try:
            count = int(path.read_text() or 0)
        except (OSError, ValueError):
            count = 0
        count += 1
    try:
        path.write_text(str(count))
    except OSError:
        pass
    return count


def stop_when_broken(s: Mapping[str, str], failures: int, kill=os.kill, find=None) -> str:
    """SIGTERM to the init (forwarded to the container's main process: the launcher, which
    passes it to flower-supernode) at the limit, SIGKILL to
    flower-supernode itself two checks later. Returns what was done."""
    limit = int(s["SUPERNODE_EXIT_AFTER_FAILURES"] or 0)
    if limit <= 0 or failures < limit:
        return ""
    if failures < limit + 2:
        print(f"health service silent {failures} times: stopping the SuperNode "
              "(the restart policy starts a new one)", file=sys.stderr)
        kill(1, signal.SIGTERM)
        return "term"
    for pid in (find or supernode_pids)():
        kill(pid, signal.SIGKILL)
    return "kill"


def supernode_pids(proc: Path = Path("/proc")) -> list[int]:
    pids = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"flower-supernode") for a in argv[:2]):
                pids.append(int(entry.name))
    return pids


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else "run"
    env = os.environ
    if mode == "healthcheck":
        sys.exit(healthcheck(env))
    if mode == "command":
        try:
            print(shlex.join(build_command(env)))
        except ValueError as exc:
            fail(str(exc))
        return
    if mode not in ("run", "check"):
        fail(f"unknown mode {mode!r} (run, check, command, healthcheck)")
    problems = check(env)
    if problems:
        fail("cannot start:\n  - " + "\n  - ".join(problems))
    if mode == "check":
        print("supernode entrypoint: configuration OK")
        return
    os.environ.update(FIXED_ENV)
    cmd = build_command(env)
    print(f"supernode entrypoint: {shlex.join(cmd)}", flush=True)
    if launcher_mode(env) == "flwr":
        os.execvp(cmd[0], cmd)
    address, preload, interval = launcher_settings(env)
    sys.exit(launcher_module().run(cmd, address, preload, interval))


if __name__ == "__main__":
    main(sys.argv)
