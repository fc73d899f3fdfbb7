#!/usr/bin/env python3
"""Entrypoint of the SuperLink container (Flower 1.42 `flower-superlink`).

Usage (the image's ENTRYPOINT is ``python3 /usr/local/bin/entrypoint.py``; ``python3``
is Debian's, through the venv in /opt/venv):

    entrypoint.py              validate the TLS files and the state volume, exec flower-superlink
    entrypoint.py check        validate only; exit 0 when all is well
    entrypoint.py command      print the flower-superlink command line (no file checks)
    entrypoint.py healthcheck  GET https://127.0.0.1:<port>/health (CA-verified) and ask
                               the gRPC health service; exit 0 when both answer

One HTTPS listener (``--host``/``--port``, default 0.0.0.0:8000) carries the Fleet
(/v1/fleet/), Control (/v1/control/) and Runtime (/v1/runtime/) APIs; the gRPC health
service (no TLS) listens on SUPERLINK_HEALTH_ADDRESS.

Importing this module has no side effects: ``settings``, ``build_command``,
``tls_problems``, ``data_problems``, ``cert_info`` and ``san_problems`` are pure (or
read-only) helpers for unit tests.
"""
from __future__ import annotations

import os
import shlex
import ssl
import sys
from pathlib import Path
from typing import Mapping

DEFAULTS = {
    "SUPERLINK_HOST": "0.0.0.0",
    "SUPERLINK_PORT": "8000",
    # Plain gRPC health service (grpc.health.v1, no TLS); empty disables it.
    "SUPERLINK_HEALTH_ADDRESS": "0.0.0.0:9099",
    # SQLite state (nodes, runs, registered SuperNode keys): on the /data volume.
    "SUPERLINK_DATABASE": "/data/state.db",
    "SUPERLINK_ISOLATION": "subprocess",
    # "1": SuperNodes must present a registered public key (`flwr supernode register`).
    "SUPERLINK_ENABLE_SUPERNODE_AUTH": "1",
    # Extra flower-superlink arguments, shell-split and appended (e.g. "--log-file ...").
    "SUPERLINK_EXTRA_ARGS": "",
    "FL_TLS_DIR": "/etc/fl/tls",
}

# Set for flower-superlink and everything it starts (SuperExec, flwr-serverapp).
FIXED_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    # No `uv sync` per run: the apps' dependencies are baked into the image.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}

TLS_FILES = ("ca.crt", "tls.crt", "tls.key")
TRUE = {"1", "true", "yes", "on"}


def fail(message: str, code: int = 2) -> None:
    print(f"superlink entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """DEFAULTS overridden by non-empty environment values (HEALTH_ADDRESS may be
    set empty on purpose to disable the health service)."""
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in env and (env[key] != "" or key in ("SUPERLINK_HEALTH_ADDRESS", "SUPERLINK_EXTRA_ARGS")):
            out[key] = env[key]
    return out


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{name}={value!r} is not a port number (1-65535)")
    return port


def build_command(env: Mapping[str, str]) -> list[str]:
    """The flower-superlink argv for these settings (raises ValueError on bad values)."""
    s = settings(env)
    tls = Path(s["FL_TLS_DIR"])
    port = _port(s["SUPERLINK_PORT"], "SUPERLINK_PORT")
    if s["SUPERLINK_ISOLATION"] not in ("subprocess", "process"):
        raise ValueError(f"SUPERLINK_ISOLATION={s['SUPERLINK_ISOLATION']!r}: use subprocess or process")
    cmd = [
        "flower-superlink",
        "--ssl-ca-certfile", str(tls / "ca.crt"),
        "--ssl-certfile", str(tls / "tls.crt"),
        "--ssl-keyfile", str(tls / "tls.key"),
        "--host", s["SUPERLINK_HOST"],
        "--port", str(port),
        "--database", s["SUPERLINK_DATABASE"],
        "--isolation", s["SUPERLINK_ISOLATION"],
        "--disable-runtime-dependency-installation",
    ]
    if s["SUPERLINK_ENABLE_SUPERNODE_AUTH"].strip().lower() in TRUE:
        cmd.append("--enable-supernode-auth")
    health = s["SUPERLINK_HEALTH_ADDRESS"].strip()
    if health:
        host, sep, hport = health.rpartition(":")
        if not sep or not host:
            raise ValueError(f"SUPERLINK_HEALTH_ADDRESS={health!r} is not HOST:PORT")
        _port(hport, "SUPERLINK_HEALTH_ADDRESS's port")
        cmd += ["--health-server-address", health]
    cmd += shlex.split(s["SUPERLINK_EXTRA_ARGS"])
    return cmd


def cert_info(path: Path) -> dict:
    """The parsed certificate (subjectAltName, notAfter, ...) via the stdlib."""
    return ssl._ssl._test_decode_cert(str(path))  # noqa: SLF001 (stdlib, no extra deps)


def san_problems(info: dict, required: tuple[tuple[str, str], ...]) -> list[str]:
    """Which of the required (type, value) SANs the certificate lacks."""
    sans = {(t, v) for t, v in info.get("subjectAltName", ())}
    return [f"{t}:{v}" for t, v in required if (t, v) not in sans]


def tls_problems(tls_dir: Path) -> list[str]:
    """Missing or unreadable TLS files, a key that does not match, a certificate
    without the SANs the SuperLink's own SuperExec needs (it connects to 127.0.0.1)."""
    problems = []
    for name in TLS_FILES:
        path = tls_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing; run: invoke ca.deploy")
        elif not os.access(path, os.R_OK):
            problems.append(f"{path} is not readable by uid {os.getuid()}; "
                            "run: invoke ca.deploy (it sets the owner)")
    if problems:
        return problems
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"))
    except (ssl.SSLError, OSError) as exc:
        problems.append(f"{tls_dir}/tls.crt and tls.key do not load as a pair: {exc}")
    try:
        ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    except (ssl.SSLError, OSError) as exc:
        problems.append(f"{tls_dir}/ca.crt is not a PEM CA certificate: {exc}")
    try:
        missing = san_problems(cert_info(tls_dir / "tls.crt"), (("IP Address", "127.0.0.1"),))
        if missing:
            problems.append(f"{tls_dir}/tls.crt lacks the SAN {', '.join(missing)}: the "
                            "SuperLink's SuperExec reaches its Runtime API on 127.0.0.1")
    except (ssl.SSLError, OSError, ValueError) as exc:
        problems.append(f"{tls_dir}/tls.crt cannot be parsed: {exc}")
    return problems


def data_problems(database: str) -> list[str]:
    if database == ":memory:":
        return []
    folder = Path(database).parent
    if not folder.is_dir():
        return [f"the state folder {folder} does not exist; mount the superlink-data volume there"]
    if not os.access(folder, os.W_OK):
        return [f"the state folder {folder} is not writable by uid {os.getuid()}; "
                "the volume must belong to uid 10040"]
    db = Path(database)
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        return [f"{db} is not readable and writable by uid {os.getuid()}"]
    return []


def check(env: Mapping[str, str]) -> list[str]:
    s = settings(env)
    try:
        build_command(env)
    except ValueError as exc:
        return [str(exc)]
    return tls_problems(Path(s["FL_TLS_DIR"])) + data_problems(s["SUPERLINK_DATABASE"])


def healthcheck(env: Mapping[str, str], timeout: float = 2.5) -> int:
    """0 when the HTTPS API answers /health (verified against the CA, as 127.0.0.1)
    and the gRPC health service says SERVING."""
    import urllib.request

    s = settings(env)
    tls = Path(s["FL_TLS_DIR"])
    port = int(s["SUPERLINK_PORT"])
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=ctx,
                                    timeout=timeout) as resp:
            if resp.status != 200:
                print(f"/health answered {resp.status}", file=sys.stderr)
                return 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"https://127.0.0.1:{port}/health: {exc}", file=sys.stderr)
        return 1
    health = s["SUPERLINK_HEALTH_ADDRESS"].strip()
    if health:
        hport = health.rpartition(":")[2]
        try:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(f"127.0.0.1:{hport}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                print(f"gRPC health: {reply.status}", file=sys.stderr)
                return 1
        except Exception as exc:  # noqa: BLE001
            print(f"gRPC health on 127.0.0.1:{hport}: {exc}", file=sys.stderr)
            return 1
    return 0


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
        print("superlink entrypoint: configuration OK")
        return
    os.environ.update(FIXED_ENV)
    cmd = build_command(env)
    print(f"superlink entrypoint: {shlex.join(cmd)}", flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv)
