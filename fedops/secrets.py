"""Generated secrets in ./secrets (git-ignored), handed to containers as Compose secrets.

The folder is 0700 so that on the host only its owner reaches the files; the files
themselves are 0444 because a Compose file secret is a bind mount that the service's own
(non-root) user must read. Existing values are never changed unless rotated.
"""
from __future__ import annotations

import json
import os
import secrets as pysecrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import paths
from .config import Federation
from .errors import FedopsError

# name -> what it is (shown by `invoke secrets.list`)
PASSWORDS = {
    "postgres_password": "PostgreSQL superuser (postgres)",
    "keycloak_db_password": "PostgreSQL role keycloak",
    "jupyterhub_db_password": "PostgreSQL role jupyterhub",
    "grafana_db_password": "PostgreSQL role grafana",
    "flower_db_password": "PostgreSQL role flower (reserved for applications; the SuperLink uses SQLite)",
    "monitoring_db_password": "PostgreSQL role monitoring (pg_monitor, for the metrics exporter)",
    "keycloak_admin_password": "Keycloak bootstrap admin (user admin)",
    "oidc_jupyterhub_secret": "OIDC client secret: jupyterhub",
    "oidc_grafana_secret": "OIDC client secret: grafana",
    "oidc_ctlgate_secret": "OIDC client secret: ctlgate (Control API gateway)",
    "oidc_monitoring_secret": "OIDC client secret: monitoring (the edge's oauth2-proxy for Prometheus and Alertmanager)",
    "oauth2_proxy_cookie_secret": "oauth2-proxy's session cookie key (32 characters)",
    "oidc_fl_exporter_secret": "OIDC client secret: fl-exporter (service account, read-only Control API)",
    "grafana_admin_password": "Grafana local admin (user admin; people sign in through Keycloak)",
    "grafana_secret_key": "Grafana's key for the secrets it keeps in its database",
    "jupyterhub_cookie_secret": "JupyterHub cookie signing secret",
    "jupyterhub_crypt_key": "JupyterHub auth-state encryption (JUPYTERHUB_CRYPT_KEY is derived from it)",
    "jupyterhub_metrics_token": "JupyterHub API token of the service prometheus (scope read:metrics: /hub/metrics)",
}
USERS_FILE = "keycloak_users"       # JSON {username: password}
SUPERNODE_KEYS = "supernodes"       # folder of <org>.key / <org>.pub


def new_password(nbytes: int = 24) -> str:
    return pysecrets.token_urlsafe(nbytes)


def _write(path: Path, data: str | bytes, mode: int = 0o444) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def generate(fed: Federation, folder: Path | None = None, rotate: tuple[str, ...] = ()) -> dict[str, str]:
    """Create what is missing; returns {name: "created"|"kept"|"rotated"}."""
    folder = folder or paths.SECRETS_DIR
    ensure_dir(folder)
    unknown = [r for r in rotate if r not in PASSWORDS and r != USERS_FILE]
    if unknown:
        raise FedopsError(f"unknown secret(s) {unknown}", f"rotate one of: {', '.join(PASSWORDS)}, {USERS_FILE}")
    result = {}
    for name in PASSWORDS:
        path = folder / name
        if path.exists() and path.read_text().strip() and name not in rotate:
            result[name] = "kept"
            continue
        result[name] = "rotated" if path.exists() else "created"
        _write(path, new_password() + "\n")

    users_path = folder / USERS_FILE
    users = json.loads(users_path.read_text()) if users_path.exists() else {}
    changed = False
    for user in fed.users:
        if user.username not in users or USERS_FILE in rotate:
            users[user.username] = new_password(12)
            changed = True
    if changed or not users_path.exists():
        _write(users_path, json.dumps(users, indent=2, sort_keys=True) + "\n")
    result[USERS_FILE] = "updated" if changed else "kept"

    keys = folder / SUPERNODE_KEYS
    ensure_dir(keys)
    for org in fed.organisations:
        result[f"{SUPERNODE_KEYS}/{org.name}"] = ensure_supernode_key(keys, org.name)
    return result


def new_supernode_key(comment: str) -> tuple[bytes, str]:
    """A SuperNode authentication key: OpenSSH EC P-384 (the OPS manual's curve; flwr
    refuses Ed25519), no passphrase. Returns (private key, public key line); the public
    line is what gets registered with the SuperLink."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}\n"


def ensure_supernode_key(folder: Path, org: str) -> str:
    """An organisation's SuperNode key in folder/<org>.key and .pub (never overwritten)."""
    key_path, pub_path = folder / f"{org}.key", folder / f"{org}.pub"
    if key_path.exists() and pub_path.exists():
        return "kept"
    private, public = new_supernode_key(f"supernode-{org}")
    _write(key_path, private, 0o400)
    _write(pub_path, public, 0o444)
    return "created"


def read(name: str, folder: Path | None = None) -> str:
    path = (folder or paths.SECRETS_DIR) / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FedopsError(f"secret {name} is missing ({path})", "run: invoke secrets.generate")


def user_passwords(folder: Path | None = None) -> dict[str, str]:
    return json.loads(read(USERS_FILE, folder))
