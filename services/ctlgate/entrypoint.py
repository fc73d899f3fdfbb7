#!/usr/bin/env python3
"""ctlgate container entrypoint (Debian's python3; standard library only).

Validates the configuration, then execs the gateway in /opt/venv:
  * the domain: env FL_DOMAIN, else key "domain" of /etc/fl/federation.json;
  * the project CA that verifies Keycloak's TLS: /etc/fl/tls/ca.crt
    (CTLGATE_CA_FILE to change; an empty value means the system roots);
  * every optional CTLGATE_* value (parsed the same way the server parses it).

``entrypoint.py --check`` validates and prints the effective settings, then exits;
``entrypoint.py --healthcheck`` asks the running gateway's /healthz over HTTPS.
"""

from __future__ import annotations

import os
import sys

APP_DIR = "/opt/ctlgate"
VENV_PYTHON = "/opt/venv/bin/python"


def fail(message: str) -> None:
    print(f"ctlgate: configuration error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def check_ca(path: str) -> None:
    if not os.path.isfile(path):
        fail(f"CA certificate {path} is missing (mount ca/deploy/ctlgate/ at /etc/fl/tls/)")
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        fail(f"CA certificate {path} is not readable: {exc.strerror}")
    if "-----BEGIN CERTIFICATE-----" not in text:
        fail(f"CA certificate {path} holds no PEM certificate")


def healthcheck(config) -> int:
    """GET /healthz over the same TLS the edge uses (verified against the project CA)."""
    import ssl
    import urllib.request
    scheme = "https" if config.tls_cert else "http"
    context = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else None
    try:
        with urllib.request.urlopen(f"{scheme}://localhost:{config.listen_port}/healthz",
                                    timeout=4, context=context if scheme == "https" else None) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"ctlgate healthcheck: {exc}", file=sys.stderr)
        return 1


def main() -> None:
    sys.path.insert(0, os.environ.get("CTLGATE_APP_DIR", APP_DIR))
    try:
        from ctlgate.config import Config, ConfigError  # standard library only
    except ImportError as exc:
        fail(f"cannot import ctlgate.config from {APP_DIR}: {exc}")

    try:
        config = Config.from_env()
    except ConfigError as exc:
        fail(str(exc))
    if "--healthcheck" in sys.argv[1:]:
        sys.exit(healthcheck(config))
    if config.ca_file:
        check_ca(config.ca_file)
    for path in filter(None, (config.tls_cert, config.tls_key)):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            fail(f"TLS file {path} is not readable as uid {os.getuid()} ({exc.strerror}); "
                 "run: invoke ca.deploy (ca/deploy/ctlgate/ is mounted at /etc/fl/tls/)")
    if not 0 < config.listen_port < 65536:
        fail(f"listen port {config.listen_port} out of range")

    env = dict(os.environ)
    env["FL_DOMAIN"] = config.domain
    env["PYTHONPATH"] = os.environ.get("CTLGATE_APP_DIR", APP_DIR)
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")

    summary = (
        f"domain={config.domain} issuer={config.issuer} audience={config.audience} "
        f"role={config.role} cli_client={config.cli_client_id} jwks={config.jwks_url} "
        f"ca={config.ca_file or 'system roots'} listen={'https' if config.tls_cert else 'http'}://"
        f"{config.listen_host}:{config.listen_port} "
        f"probes={','.join(config.probes)}"
    )
    if "--check" in sys.argv[1:]:
        print(f"ctlgate: configuration OK: {summary}", flush=True)
        return
    print(f"ctlgate: starting: {summary}", flush=True)
    python = os.environ.get("CTLGATE_PYTHON", VENV_PYTHON)
    os.execvpe(python, [python, "-m", "ctlgate"], env)


if __name__ == "__main__":
    main()
