#!/usr/bin/env python3
"""Entrypoint of the Keycloak image: identity provider for the flowerfl realm.

Validates the federation description, the secrets and the TLS files, renders the realm
import (with passwords and client secrets) into a private temporary directory, then execs
Keycloak. Fails with exit status 2 and a message naming the missing file or value.

Commands (the image's CMD is `start`):
  start [KC_OPTION ...]  run `kc.sh start --optimized --import-realm` (extra options appended)
  check                  validate and render only, print a summary (no secrets)
  export [DIR]           export realm flowerfl with its users from PostgreSQL: into DIR
                         (inside the container), or without DIR as JSON on stdout
  kc ARG ...             run kc.sh with the same environment (e.g. `kc show-config`)

Importable without side effects: `render_realm(federation, secrets)` is the pure part
(jinja2 + stdlib only) for unit tests on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import jinja2

REALM = "flowerfl"
KC_SH = "/opt/keycloak/bin/kc.sh"
# The user events counted in keycloak_user_events_total (label `event`; a failed
# sign-in is event "login" with a non-empty `error`).
USER_EVENT_METRICS = (
    "login",
    "logout",
    "code_to_token",
    "refresh_token",
    "user_disabled_by_temporary_lockout",
    "user_disabled_by_permanent_lockout",
)
FEDERATION_FILE = Path(os.environ.get("FL_FEDERATION_FILE", "/etc/fl/federation.json"))
SECRETS_DIR = Path(os.environ.get("FL_SECRETS_DIR", "/run/secrets"))
TLS_DIR = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
# --import-realm reads only /opt/keycloak/data/import: the image links it to IMPORT_DIR.
IMPORT_DIR = Path("/tmp/keycloak-import")
IMPORT_LINK = Path("/opt/keycloak/data/import")
TEMPLATE_NAME = "realm-flowerfl.json.j2"
TEMPLATE_DIRS = (Path(__file__).resolve().parent, Path("/usr/local/share/flowerfl/keycloak"))

# Realm roles granted by each functional group (QCIF OPS manual conventions).
GROUP_ROLES: dict[str, list[str]] = {
    "jupyter_users": ["jupyter_user"],
    "jupyter_admins": ["jupyter_admin", "jupyter_user"],
    "superlink_users": ["superlink_user"],
    "superlink_viewers": ["superlink_viewer"],
    "monitoring_viewers": ["monitoring_viewer"],
    # Grafana maps these to its roles (role_attribute_path, services/grafana/grafana.ini)
    "grafana_editors": ["grafana_editor"],
    "grafana_admins": ["grafana_admin"],
}
# Confidential OIDC clients and the secret holding each one's client secret.
CLIENT_SECRETS = {
    "jupyterhub": "oidc_jupyterhub_secret",
    "grafana": "oidc_grafana_secret",
    "ctlgate": "oidc_ctlgate_secret",
    "monitoring": "oidc_monitoring_secret",     # the edge's oauth2-proxy (monitoring UIs)
    "fl-exporter": "oidc_fl_exporter_secret",   # service account, read-only Control API
}
ADMIN_USERNAME = "admin"
MIN_PASSWORD_LENGTH = 12  # the realm's password policy: length(12)

DEFAULTS = {
    # Proxy headers are honoured only from the edge (NGINX) on fl-services-network.
    "KC_PROXY_TRUSTED_ADDRESSES": "172.20.0.0/16",
    # Admin console only through the port published on 127.0.0.1; "" disables.
    "KC_HOSTNAME_ADMIN": "https://localhost:8443",
    "KC_DB_URL_HOST": "postgres",
    "KC_DB_URL_PORT": "5432",
    "KC_DB_URL_DATABASE": "keycloak",
    "KC_DB_USERNAME": "keycloak",
}

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_ORG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(Exception):
    """An input is missing or invalid; the message names it."""


# --------------------------------------------------------------------------- pure part

def _text(obj: Mapping[str, Any], key: str, where: str, pattern: re.Pattern | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key} is missing or empty")
    value = value.strip()
    if pattern is not None and not pattern.match(value):
        raise ConfigError(f"{where}.{key} {value!r} is not valid (expected {pattern.pattern})")
    return value


def _secret_text(value: Any, name: str, min_length: int = 1) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"secret {name} is missing or empty")
    if "${" in value:
        # Keycloak substitutes ${ENV} placeholders in imported realm files.
        raise ConfigError(f"secret {name} must not contain '${{'")
    if len(value) < min_length:
        raise ConfigError(f"secret {name} is shorter than {min_length} characters")
    return value


def validate_federation(federation: Mapping[str, Any]) -> dict[str, Any]:
    """Check federation.json (merged federation.yaml) and return the parts the realm uses."""
    if not isinstance(federation, Mapping):
        raise ConfigError("federation.json must contain a JSON object")
    domain = _text(federation, "domain", "federation", _DOMAIN_RE)

    orgs_in = federation.get("organisations")
    if not isinstance(orgs_in, list) or not orgs_in:
        raise ConfigError("federation.organisations is missing or empty")
    organisations = []
    for i, org in enumerate(orgs_in):
        where = f"federation.organisations[{i}]"
        if not isinstance(org, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        name = _text(org, "name", where, _ORG_RE)
        display = org.get("display_name") or name
        if not isinstance(display, str):
            raise ConfigError(f"{where}.display_name must be a string")
        if any(o["name"] == name for o in organisations):
            raise ConfigError(f"{where}.name {name!r} is listed twice")
        organisations.append({"name": name, "display_name": display.strip()})
    org_names = {o["name"] for o in organisations}

    users_in = federation.get("users", [])
    if not isinstance(users_in, list):
        raise ConfigError("federation.users must be a list")
    users, seen_names, seen_emails = [], set(), set()
    for i, user in enumerate(users_in):
        where = f"federation.users[{i}]"
        if not isinstance(user, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        username = _text(user, "username", where, _USERNAME_RE)
        where = f"federation.users[{i}] ({username})"
        email = _text(user, "email", where, _EMAIL_RE).lower()
        organisation = _text(user, "organisation", where)
        if organisation not in org_names:
            raise ConfigError(f"{where}.organisation {organisation!r} is not one of federation.organisations")
        groups = user.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"{where}.groups must be a list of group names")
        unknown = sorted(set(groups) - set(GROUP_ROLES))
        if unknown:
            raise ConfigError(f"{where}.groups: unknown group(s) {', '.join(unknown)} (known: {', '.join(GROUP_ROLES)})")
        if username in seen_names:
            raise ConfigError(f"{where}.username is listed twice")
        if email in seen_emails:
            raise ConfigError(f"{where}.email {email!r} is used by another user")
        seen_names.add(username)
        seen_emails.add(email)
        users.append({
            "username": username,
            "email": email,
            "first_name": _text(user, "first_name", where),
            "last_name": _text(user, "last_name", where),
            "organisation": organisation,
            "groups": list(dict.fromkeys(groups)),
        })
    urls = federation.get("urls")
    if not isinstance(urls, Mapping) or not all(isinstance(urls.get(k), str) and urls[k].startswith("https://")
                                                for k in ("auth", "hub", "grafana")):
        raise ConfigError("federation.urls must give the https:// URLs of auth, hub and grafana "
                          "(render federation.json with the tasks: invoke up)")
    return {"domain": domain, "organisations": organisations, "users": users, "urls": dict(urls)}


def _template_environment() -> jinja2.Environment:
    for directory in TEMPLATE_DIRS:
        if (directory / TEMPLATE_NAME).is_file():
            return jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(directory)),
                undefined=jinja2.StrictUndefined,
                autoescape=False,
                keep_trailing_newline=True,
            )
    raise ConfigError(f"template {TEMPLATE_NAME} not found in {', '.join(map(str, TEMPLATE_DIRS))}")


def render_realm(federation: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Return the realm representation (a dict) for Keycloak's import.

    federation: the parsed federation.json ({domain, organisations, users}).
    secrets: {"keycloak_users": {username: password} (dict or its JSON text),
              "oidc_jupyterhub_secret": ..., "oidc_grafana_secret": ..., "oidc_ctlgate_secret": ...}
    Raises ConfigError naming the missing or invalid value.
    """
    fed = validate_federation(federation)

    passwords = secrets.get("keycloak_users")
    if isinstance(passwords, str):
        try:
            passwords = json.loads(passwords)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"secret keycloak_users is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(passwords, Mapping):
        raise ConfigError("secret keycloak_users is missing or not a JSON object {username: password}")

    users = []
    for user in fed["users"]:
        name = user["username"]
        if name not in passwords:
            raise ConfigError(f"secret keycloak_users has no password for user {name!r}")
        users.append({
            **user,
            "password": _secret_text(passwords[name], f"keycloak_users[{name!r}]", MIN_PASSWORD_LENGTH),
            "group_paths": ["/" + g for g in user["groups"]] + ["/org-" + user["organisation"]],
        })

    client_secrets = {
        client: _secret_text(secrets.get(name), name, 16) for client, name in CLIENT_SECRETS.items()
    }

    text = _template_environment().get_template(TEMPLATE_NAME).render(
        domain=fed["domain"],
        urls=fed["urls"],
        organisations=fed["organisations"],
        users=users,
        secrets=client_secrets,
        group_roles=GROUP_ROLES,
    )
    try:
        realm = json.loads(text)
    except json.JSONDecodeError as exc:  # a template bug, not an input problem
        raise RuntimeError(f"{TEMPLATE_NAME} rendered invalid JSON: {exc}") from None
    return realm


def keycloak_environment(auth_url: str, db_password: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment kc.sh runs with: tunables from `base` (with defaults), the rest fixed."""
    env = dict(base)
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    if not env["KC_HOSTNAME_ADMIN"]:
        del env["KC_HOSTNAME_ADMIN"]
    ca = TLS_DIR / "ca.crt"
    env.update({
        # PostgreSQL over TLS, server certificate and hostname verified against the project CA.
        "KC_DB_URL": (
            f"jdbc:postgresql://{env['KC_DB_URL_HOST']}:{env['KC_DB_URL_PORT']}/{env['KC_DB_URL_DATABASE']}"
            f"?ssl=true&sslmode=verify-full&sslrootcert={ca}"
        ),
        "KC_DB_PASSWORD": db_password,
        # HTTPS only; the public URL is the edge's (federation.json: urls.auth, with the
        # published port unless it is 443): the issuer of every token.
        "KC_HOSTNAME": auth_url,
        "KC_HTTP_ENABLED": "false",
        "KC_HTTPS_PORT": "8443",
        "KC_HTTPS_CERTIFICATE_FILE": str(TLS_DIR / "tls.crt"),
        "KC_HTTPS_CERTIFICATE_KEY_FILE": str(TLS_DIR / "tls.key"),
        "KC_PROXY_HEADERS": "xforwarded",
        # /health and /metrics on the management port, HTTPS with the same certificate.
        "KC_HTTP_MANAGEMENT_PORT": "9000",
        # keycloak_user_events_total (enabled at build) for these events only: sign-ins
        # and their failures, sign-outs, and brute-force lockouts (alert
        # KeycloakBruteForceLockout, services/prometheus/rules/alerts.yml).
        "KC_EVENT_METRICS_USER_EVENTS": ",".join(USER_EVENT_METRICS),
        # Outgoing TLS from Keycloak trusts the project CA (plus Java's defaults).
        "KC_TRUSTSTORE_PATHS": str(ca),
        # One node; sessions persist in PostgreSQL.
        "KC_CACHE": "local",
    })
    return env


# --------------------------------------------------------------------------- I/O part

def read_secret(name: str) -> str:
    """/run/secrets/NAME first, else the environment variable NAME upper-cased."""
    path = SECRETS_DIR / name
    if path.exists():
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"secret file {path} is not readable: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"secret file {path} is empty")
        return value
    value = os.environ.get(name.upper(), "").strip()
    if value:
        return value
    raise ConfigError(f"secret {name} is missing: expected file {path} (or environment variable {name.upper()})")


def check_tls_files() -> None:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        path = TLS_DIR / name
        if not path.is_file():
            raise ConfigError(f"TLS file {path} is missing")
        try:
            head = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise ConfigError(f"TLS file {path} is not readable by uid {os.getuid()}: {exc.strerror}") from None
        if "-----BEGIN " not in head:
            raise ConfigError(f"TLS file {path} is not PEM")


def load_federation() -> dict[str, Any]:
    if not FEDERATION_FILE.is_file():
        raise ConfigError(f"federation file {FEDERATION_FILE} is missing")
    try:
        return json.loads(FEDERATION_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"federation file {FEDERATION_FILE} is not readable JSON: {exc}") from None


def load_secrets() -> dict[str, str]:
    names = ["keycloak_db_password", "keycloak_admin_password", "keycloak_users", *CLIENT_SECRETS.values()]
    return {name: read_secret(name) for name in names}


def write_import(realm: Mapping[str, Any], directory: Path = IMPORT_DIR) -> Path:
    """Write <realm>-realm.json, readable by this user only, into a fresh directory."""
    if directory.is_symlink() or directory.is_file():
        directory.unlink()
    elif directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700)
    path = directory / f"{realm['realm']}-realm.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(realm, handle, indent=1)
    return path


def ensure_import_link(link: Path = IMPORT_LINK, target: Path = IMPORT_DIR) -> None:
    """Recreate the data/import link when /opt/keycloak/data is a fresh tmpfs (read-only root)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() or link.is_symlink():
        raise ConfigError(f"{link} must be a symlink to {target} (rendered realm files stay out of the image)")
    try:
        link.symlink_to(target)
    except OSError as exc:
        raise ConfigError(f"cannot create {link} -> {target}: {exc.strerror} "
                          f"(mount a tmpfs owned by uid {os.getuid()} on {link.parent} or keep it writable)") from None


def export_argv(directory: str) -> list[str]:
    return [KC_SH, "export", "--optimized", "--realm", REALM, "--dir", directory, "--users", "realm_file"]


def export_to_stdout(env: Mapping[str, str]) -> int:
    """Export into a private temporary directory, print the realm JSON, remove the directory.

    Keycloak's log goes to stderr so stdout carries only the JSON (works with a tmpfs /tmp,
    which `docker cp` cannot read)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="flowerfl-export-") as tmp:
        result = subprocess.run(export_argv(tmp), env=dict(env), stdout=sys.stderr, check=False)
        path = Path(tmp) / f"{REALM}-realm.json"
        if result.returncode != 0 or not path.is_file():
            log(f"export failed (kc.sh exit status {result.returncode})")
            return result.returncode or 1
        sys.stdout.write(path.read_text(encoding="utf-8"))
        sys.stdout.flush()
    return 0


def log(message: str) -> None:
    print(f"keycloak-entrypoint: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("start", [])
    os.umask(0o077)  # rendered realm, exports and Keycloak's temporary files: owner only
    if command not in ("start", "check", "export", "kc"):
        log(f"unknown command {command!r}; use start, check, export [DIR] or kc ARGS")
        return 2
    try:
        check_tls_files()
        federation = load_federation()
        secrets = load_secrets()
        auth_url = validate_federation(federation)["urls"]["auth"]
        env = keycloak_environment(auth_url, secrets["keycloak_db_password"], os.environ)

        if command == "export":
            if len(args) > 1:
                raise ConfigError("usage: export [DIR]  (no DIR: the realm JSON goes to stdout)")
            # The running server holds 8443/9000; the export's own listeners take free ports.
            env.update({"KC_HTTPS_PORT": "0", "KC_HTTP_MANAGEMENT_PORT": "0"})
            if not args:
                return export_to_stdout(env)
            argv_kc = export_argv(args[0])
        elif command == "kc":
            argv_kc = [KC_SH, *args]
        else:
            realm = render_realm(federation, secrets)
            if command == "check":
                print(json.dumps({
                    "realm": realm["realm"],
                    "hostname": env["KC_HOSTNAME"],
                    "db_url": env["KC_DB_URL"],
                    "clients": [c["clientId"] for c in realm["clients"]],
                    "groups": [g["name"] for g in realm["groups"]],
                    "users": [u["username"] for u in realm["users"]],
                }, indent=1))
                return 0
            ensure_import_link()
            path = write_import(realm)
            log(f"rendered realm {REALM} to {path} (imported only if the realm does not exist yet)")
            # The bootstrap admin is created only when the master realm is created (first start).
            env["KC_BOOTSTRAP_ADMIN_USERNAME"] = ADMIN_USERNAME
            env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = secrets["keycloak_admin_password"]
            argv_kc = [KC_SH, "start", "--optimized", "--import-realm", *args]
    except ConfigError as exc:
        log(f"error: {exc}")
        return 2

    log(f"exec {' '.join(argv_kc)} (hostname {env['KC_HOSTNAME']})")
    os.execve(KC_SH, argv_kc, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
