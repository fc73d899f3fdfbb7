#!/usr/bin/env python3
"""PostgreSQL exporter entrypoint: build the connection string from the monitoring role's
secret (never from the environment Compose shows), then exec Debian's
prometheus-postgres-exporter with it. TLS verify-full against the project CA.

  entrypoint.py              check, exec prometheus-postgres-exporter
  entrypoint.py healthcheck  ask the running exporter's landing page

FL_POSTGRES_HOST (default postgres), FL_POSTGRES_PORT_INTERNAL (default 5432).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote

SECRETS = Path(os.environ.get("FL_SECRETS_DIR", "/run/secrets"))
TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
LISTEN_PORT = 9187
ROLE = "monitoring"          # services/postgres/entrypoint.py: MONITORING_ROLE
SECRET = "monitoring_db_password"


def fail(message: str) -> None:
    print(f"postgres-exporter entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def password(secrets: Path = SECRETS) -> str:
    try:
        value = (secrets / SECRET).read_text().strip()
    except OSError:
        value = ""
    if not value:
        fail(f"secret {secrets / SECRET} is missing; run: invoke secrets.generate")
    return value


def dsn(pw: str, env: dict[str, str], tls: Path = TLS) -> str:
    host = (env.get("FL_POSTGRES_HOST") or "").strip() or "postgres"
    port = (env.get("FL_POSTGRES_PORT_INTERNAL") or "").strip() or "5432"
    if not port.isdigit():
        fail(f"FL_POSTGRES_PORT_INTERNAL={port!r} is not a port number")
    # verify-full: the server certificate names the host (its SANs: fedops/services.py)
    return (f"postgresql://{ROLE}:{quote(pw, safe='')}@{host}:{port}/postgres"
            f"?sslmode=verify-full&sslrootcert={quote(str(tls / 'ca.crt'))}")


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"postgres-exporter healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    if not (TLS / "ca.crt").is_file():
        fail(f"{TLS / 'ca.crt'} is missing (it verifies PostgreSQL's certificate); run: invoke ca.deploy")
    env = dict(os.environ)
    env["DATA_SOURCE_NAME"] = dsn(password(), env)
    argv = ["prometheus-postgres-exporter", f"--web.listen-address=:{LISTEN_PORT}"]
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
