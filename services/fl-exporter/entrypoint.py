#!/usr/bin/env python3
"""FL exporter entrypoint: validate the federation file, the service account's secret, the
project CA and the CRL, then exec the exporter (flexporter, in /opt/venv) on port 9200.

  entrypoint.py              validate, exec the exporter
  entrypoint.py healthcheck  ask the running exporter's /metrics
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FEDERATION = Path(os.environ.get("FL_FEDERATION_JSON", "/etc/fl/federation.json"))
TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
SECRETS = Path(os.environ.get("FL_SECRETS_DIR", "/run/secrets"))
APP_DIR = "/opt/flexporter"
VENV_PYTHON = "/opt/venv/bin/python"
LISTEN_PORT = 9200
REALM = "flowerfl"
CLIENT_ID = "fl-exporter"                   # services/keycloak/realm-flowerfl.json.j2
SECRET = "oidc_fl_exporter_secret"


def fail(message: str) -> None:
    print(f"fl-exporter entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def settings_from(fed: dict, secret: str, tls: Path = TLS) -> dict:
    """What the exporter needs, from federation.json: the back channel goes to the edge's
    internal port 443 (the names resolve to the edge on the monitoring network)."""
    hosts = fed.get("hostnames", {})
    for name in ("auth", "control"):
        if name not in hosts:
            fail(f"{FEDERATION} names no {name} host; run: invoke up (it renders build/federation.json)")
    return {"token_url": f"https://{hosts['auth']}/realms/{REALM}/protocol/openid-connect/token",
            "control_url": f"https://{hosts['control']}",
            "client_id": CLIENT_ID, "client_secret": secret,
            "organisations": [o["name"] for o in fed.get("organisations", [])],
            "ca_file": str(tls / "ca.crt"),
            # the CRL the edge checks organisations against (ca/deploy/*/crl.pem: one
            # file, copied to every service's folder by invoke up and invoke ca.revoke)
            "crl_file": str(tls / "crl.pem")}


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/metrics", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"fl-exporter healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    try:
        fed = json.loads(FEDERATION.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{FEDERATION} is missing or not JSON ({exc}); run: invoke up (it renders build/federation.json)")
    try:
        secret = (SECRETS / SECRET).read_text().strip()
    except OSError:
        secret = ""
    if not secret:
        fail(f"secret {SECRETS / SECRET} is missing; run: invoke secrets.generate")
    if not (TLS / "ca.crt").is_file():
        fail(f"{TLS / 'ca.crt'} is missing (it verifies the edge); run: invoke ca.deploy")
    if not (TLS / "crl.pem").is_file():
        fail(f"{TLS / 'crl.pem'} is missing (its expiry is a metric); run: invoke ca.deploy")
    env = dict(os.environ, FL_EXPORTER_SETTINGS=json.dumps(settings_from(fed, secret)),
               PYTHONPATH=APP_DIR)
    os.execve(VENV_PYTHON, [VENV_PYTHON, "-m", "flexporter", str(LISTEN_PORT)], env)


if __name__ == "__main__":
    main(sys.argv[1:])
