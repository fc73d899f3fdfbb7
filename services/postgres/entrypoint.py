#!/usr/bin/env python3
"""PostgreSQL entrypoint: validate, initialise once, reconcile roles and databases on
every start (passwords follow the secrets), render SSL and pg_hba, then exec postgres.

Pure helpers (parse_networks, render_*, reconcile_sql) are importable for unit tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
SECRETS = Path(os.environ.get("FL_SECRETS_DIR", "/run/secrets"))
TEMPLATES = Path(os.environ.get("FL_TEMPLATES", "/usr/local/share/fl-postgres"))
PGDATA = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data/pgdata"))
# One database per consumer, owned by a role of the same name.
DATABASES = ("keycloak", "jupyterhub", "grafana", "flower")
# The metrics exporter's role: pg_monitor's read-only statistics, database postgres only,
# from the monitoring network only (FL_MONITORING_NETWORKS).
MONITORING_ROLE = "monitoring"


def fail(message: str) -> None:
    print(f"postgres entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def secret(name: str) -> str:
    path = SECRETS / name
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = os.environ.get(name.upper(), "")
    if not value:
        fail(f"secret {name} is missing ({path}); run: invoke secrets.generate")
    return value


def parse_networks(spec: str) -> list[dict]:
    """'name=cidr,name=cidr' -> [{'name':..., 'subnet':...}] (validated)."""
    import ipaddress
    nets = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, cidr = item.partition("=")
        try:
            subnet = str(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            fail(f"FL_CLIENT_NETWORKS entry {item!r} is not name=CIDR")
        nets.append({"name": name.strip(), "subnet": subnet})
    if not nets:
        fail("FL_CLIENT_NETWORKS is empty: no network could connect")
    return nets


def render(template: str, **values) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**values)


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def reconcile_sql(passwords: dict[str, str]) -> str:
    """Idempotent SQL: roles exist with the secrets' passwords, databases exist, owned by
    their role, and nobody else may connect to them."""
    lines = ["SET password_encryption = 'scram-sha-256';"]
    if "postgres" in passwords:
        lines.append(f"ALTER ROLE postgres PASSWORD {quote_literal(passwords['postgres'])};")
    for db in DATABASES:
        pw = quote_literal(passwords[db])
        lines += [
            f"SELECT 'CREATE ROLE {db} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{db}')\\gexec",
            f"ALTER ROLE {db} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {pw};",
            f"SELECT 'CREATE DATABASE {db} OWNER {db}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{db}')\\gexec",
            f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
            f"GRANT ALL ON DATABASE {db} TO {db};",
        ]
    if MONITORING_ROLE in passwords:
        role, pw = MONITORING_ROLE, quote_literal(passwords[MONITORING_ROLE])
        lines += [
            f"SELECT 'CREATE ROLE {role} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec",
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {pw};",
            f"GRANT pg_monitor TO {role};",
            f"GRANT CONNECT ON DATABASE postgres TO {role};",
        ]
    return "\n".join(lines) + "\n"


def check_tls() -> None:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        path = TLS / name
        if not path.is_file():
            fail(f"{path} is missing; run: invoke ca.deploy")
    try:
        (TLS / "tls.key").read_bytes()
    except PermissionError:
        fail(f"{TLS / 'tls.key'} is not readable by uid {os.getuid()}; run: invoke ca.deploy")


def psql(sql: str) -> None:
    proc = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", "-h", "/tmp",
                           "-U", "postgres", "-d", "postgres", "-f", "-"],
                          input=sql, text=True, capture_output=True)
    if proc.returncode != 0:
        fail(f"reconciling roles and databases failed: {proc.stderr.strip()}")


def main() -> None:
    check_tls()
    passwords = {"postgres": secret("postgres_password")}
    passwords.update({db: secret(f"{db}_db_password") for db in DATABASES})
    passwords[MONITORING_ROLE] = secret(f"{MONITORING_ROLE}_db_password")
    networks = parse_networks(os.environ.get("FL_CLIENT_NETWORKS", "fl-services-network=172.20.0.0/16"))
    monitoring = parse_networks(os.environ.get("FL_MONITORING_NETWORKS", "")) \
        if os.environ.get("FL_MONITORING_NETWORKS", "").strip() else []

    if not (PGDATA / "PG_VERSION").exists():
        print("postgres entrypoint: initialising a new cluster", flush=True)
        PGDATA.mkdir(parents=True, exist_ok=True)
        os.chmod(PGDATA, 0o700)
        pwfile = Path("/tmp/pwfile")
        pwfile.write_text(passwords["postgres"] + "\n")
        os.chmod(pwfile, 0o600)
        subprocess.run(["initdb", "-D", str(PGDATA), "-U", "postgres", "--pwfile", str(pwfile),
                        "--auth-local=peer", "--auth-host=scram-sha-256", "--data-checksums",
                        "--encoding=UTF8", "--locale=C.UTF-8"], check=True, stdout=subprocess.DEVNULL)
        pwfile.unlink()

    hba = PGDATA / "pg_hba.fl.conf"
    hba.write_text(render("pg_hba.conf.j2", networks=networks, monitoring=monitoring, monitoring_role=MONITORING_ROLE))
    (PGDATA / "postgresql.fl.conf").write_text(render("postgresql.fl.conf.j2", tls=TLS, hba_file=hba))
    conf = PGDATA / "postgresql.conf"
    include = "include = 'postgresql.fl.conf'"
    if include not in conf.read_text():
        with conf.open("a") as fh:
            fh.write(f"\n# Project settings (rendered at every start)\n{include}\n")

    # Reconcile on a server with no TCP listener and its socket in /tmp (so the
    # healthcheck, which asks /run/postgresql, stays unhealthy until the real start).
    subprocess.run(["pg_ctl", "-D", str(PGDATA), "-w", "-s", "-o",
                    "-c listen_addresses='' -c unix_socket_directories=/tmp", "start"], check=True)
    try:
        psql(reconcile_sql(passwords))
    finally:
        subprocess.run(["pg_ctl", "-D", str(PGDATA), "-w", "-s", "-m", "fast", "stop"], check=True)
    print("postgres entrypoint: roles and databases reconciled; starting", flush=True)
    os.execvp("postgres", ["postgres", "-D", str(PGDATA)])


if __name__ == "__main__":
    main()
