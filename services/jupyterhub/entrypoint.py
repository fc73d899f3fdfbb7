#!/usr/bin/env python3
"""JupyterHub container entrypoint (Debian's python3; standard library only).

Reads the federation (/etc/fl/federation.json) and the Compose environment, validates
them, writes the hub's settings (FL_HUB_SETTINGS, a tmpfs file read by the static
/opt/jupyterhub/jupyterhub_config.py), then execs JupyterHub as its user:

  * public URLs (hub., auth.) from ``urls`` in the federation file: what browsers use;
    back-channel calls (token, userinfo) go to the edge's auth. alias on port 443;
  * PostgreSQL database ``jupyterhub`` over TLS, verify-full against the project CA;
  * secrets as files: the database password, the OIDC client secret, the cookie secret
    and the crypt key (JUPYTERHUB_CRYPT_KEY is derived here and handed to the hub's
    process only: not in Compose, not in ``docker inspect``);
  * the notebook servers: image, network, limits and culling (``notebooks`` in
    federation.json), spawned through the filtering Docker API proxy.

``entrypoint.py check`` validates and prints the settings; ``entrypoint.py healthcheck``
asks the hub's /hub/health through its own TLS listener.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

FEDERATION_JSON = Path("/etc/fl/federation.json")
TLS_DIR = Path("/etc/fl/tls")
SECRETS_DIR = Path("/run/secrets")
SETTINGS_FILE = Path(os.environ.get("FL_HUB_SETTINGS", "/tmp/jupyterhub/settings.json"))
CONFIG_FILE = "/opt/jupyterhub/jupyterhub_config.py"
REALM = "flowerfl"
CLIENT_ID = "jupyterhub"
# The hub's own name on the notebooks network (its Compose service): servers call its
# API there (JUPYTERHUB_API_URL), directly, not through the egress proxy.
HUB_API_HOST = "jupyterhub"
# Notebook containers and their volumes are named <prefix>-...; the prefix names the
# instance (its Compose project) so that two instances on one engine never collide, and
# it starts with "jupyter-", the only names the Docker API proxy lets the hub touch.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MEM_RE = re.compile(r"^[1-9][0-9]*[KMG]?$")

SECRET_FILES = {
    "db_password": "jupyterhub_db_password",
    "client_secret": "oidc_jupyterhub_secret",
    "cookie_secret": "jupyterhub_cookie_secret",
    "crypt_key": "jupyterhub_crypt_key",
    "metrics_token": "jupyterhub_metrics_token",
}

NOTEBOOK_DEFAULTS = {
    "cpu_limit": 1.0,
    "mem_limit": "2G",
    "idle_timeout": 3600,
    "concurrent_spawn_limit": 20,
}


class ConfigError(Exception):
    pass


def log(message: str) -> None:
    print(f"jupyterhub-entrypoint: {message}", file=sys.stderr, flush=True)


def read_secret(name: str, folder: Path = SECRETS_DIR) -> str:
    path = folder / name
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"secret {path} is not readable as uid {os.getuid()} ({exc.strerror}); "
                          "run: invoke secrets.generate") from None
    if len(value) < 16:
        raise ConfigError(f"secret {path} is shorter than 16 characters; run: invoke secrets.generate --rotate {name}")
    return value


def crypt_key(secret: str) -> str:
    """JUPYTERHUB_CRYPT_KEY wants 32 bytes (64 hex digits): derived from the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def notebook_settings(raw: dict | None, env: dict[str, str]) -> dict:
    out = dict(NOTEBOOK_DEFAULTS)
    out.update({k: v for k, v in (raw or {}).items() if k in NOTEBOOK_DEFAULTS})
    try:
        out["cpu_limit"] = float(out["cpu_limit"])
        out["idle_timeout"] = int(out["idle_timeout"])
        out["concurrent_spawn_limit"] = int(out["concurrent_spawn_limit"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"notebooks settings in federation.json: {exc}") from None
    if not 0 < out["cpu_limit"] <= 256:
        raise ConfigError(f"notebooks.cpu_limit {out['cpu_limit']} is not between 0 and 256")
    if not MEM_RE.match(str(out["mem_limit"])):
        raise ConfigError(f"notebooks.mem_limit {out['mem_limit']!r} is not like 2G or 512M")
    if out["idle_timeout"] < 0 or out["concurrent_spawn_limit"] < 1:
        raise ConfigError("notebooks.idle_timeout must be >= 0 and notebooks.concurrent_spawn_limit >= 1")
    for key in ("FL_NOTEBOOK_IMAGE", "FL_NOTEBOOK_NETWORK", "FL_NOTEBOOK_PREFIX"):
        if not env.get(key, "").strip():
            raise ConfigError(f"{key} is not set (docker-compose.yml passes it)")
    out["image"] = env["FL_NOTEBOOK_IMAGE"].strip()
    out["network"] = env["FL_NOTEBOOK_NETWORK"].strip()
    prefix = env["FL_NOTEBOOK_PREFIX"].strip().lower()
    if not prefix.startswith("jupyter-") or not NAME_RE.match(prefix):
        raise ConfigError(f"FL_NOTEBOOK_PREFIX={prefix!r} must start with 'jupyter-' and be a Docker name")
    out["prefix"] = prefix
    out["docker_api"] = env.get("FL_DOCKER_API", "tcp://dockerproxy:2375").strip()
    # the servers' HTTP(S)_PROXY (services/egress-proxy decides what it lets out); empty:
    # none set, the servers reach nothing beyond the notebooks network
    out["egress_proxy"] = env.get("FL_NOTEBOOK_EGRESS_PROXY", "").strip()
    out["gpus"] = gpus(env.get("FL_NOTEBOOK_GPUS", ""))
    return out


def gpus(value: str) -> int:
    """GPUs per notebook server (the GPU profile sets FL_NOTEBOOK_GPUS): 0 none, -1 all."""
    value = value.strip().lower()
    if value in ("", "0"):
        return 0
    if value == "all":
        return -1
    if not value.isdigit():
        raise ConfigError(f"FL_NOTEBOOK_GPUS={value!r} is not a number of GPUs or 'all' "
                          "(FL_GPUS_PER_NOTEBOOK in .env.local)")
    return int(value)


def settings(federation: dict, env: dict[str, str], secrets: dict[str, str]) -> dict:
    """The hub's settings (pure: federation.json, environment, secrets in; a dict out)."""
    try:
        hostnames, urls = federation["hostnames"], federation["urls"]
        hub_url, auth_url, auth_host = urls["hub"], urls["auth"], hostnames["auth"]
        control_host = hostnames["control"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"/etc/fl/federation.json has no {exc} (run: invoke up, which renders it)") from None
    for url in (hub_url, auth_url):
        if not str(url).startswith("https://"):
            raise ConfigError(f"public URL {url!r} is not https")
    realm_public = f"{auth_url}/realms/{REALM}/protocol/openid-connect"
    realm_internal = f"https://{auth_host}/realms/{REALM}/protocol/openid-connect"
    db_host = env.get("FL_HUB_DB_HOST", "postgres")
    return {
        "hub_url": hub_url,
        "hub_host": hostnames["hub"],
        "control_host": control_host,
        "connection_name": str(federation.get("connection_name") or "fl"),
        "auth_host": auth_host,
        "tls_cert": str(TLS_DIR / "tls.crt"),
        "tls_key": str(TLS_DIR / "tls.key"),
        "ca_file": str(TLS_DIR / "ca.crt"),
        "db_url": (f"postgresql+psycopg://jupyterhub@{db_host}:5432/jupyterhub"
                   f"?sslmode=verify-full&sslrootcert={TLS_DIR / 'ca.crt'}"),
        "db_host": db_host,
        "db_password": secrets["db_password"],
        "cookie_secret": secrets["cookie_secret"],
        # /hub/metrics: the token of the hub service "prometheus" (scope read:metrics)
        "metrics_token": secrets["metrics_token"],
        "oauth": {
            "client_id": CLIENT_ID,
            "client_secret": secrets["client_secret"],
            "callback_url": f"{hub_url}/hub/oauth_callback",
            "authorize_url": f"{realm_public}/auth",
            "token_url": f"{realm_internal}/token",
            "userdata_url": f"{realm_internal}/userinfo",
            # Logging out of the hub ends the Keycloak session too (RP-initiated logout).
            "logout_redirect_url": (f"{realm_public}/logout?client_id={CLIENT_ID}"
                                    f"&post_logout_redirect_uri={hub_url}/hub/login"),
            "allowed_groups": ["jupyter_users", "jupyter_admins"],
            "admin_groups": ["jupyter_admins"],
        },
        "notebooks": notebook_settings(federation.get("notebooks"), env),
        # where the servers reach the hub's API (the notebooks network)
        "hub_connect_url": f"http://{HUB_API_HOST}:8081",
        # what the servers reach directly (the hub's API; the platform's hosts through
        # the edge), never through the egress proxy, which would refuse them
        "no_proxy": ",".join([HUB_API_HOST, *sorted(set(hostnames.values())), "localhost", "127.0.0.1"]),
    }


def load(env: dict[str, str] | None = None) -> tuple[dict, str]:
    env = dict(os.environ if env is None else env)
    try:
        federation = json.loads(FEDERATION_JSON.read_text())
    except OSError as exc:
        raise ConfigError(f"{FEDERATION_JSON} is not readable ({exc.strerror}); mount build/federation.json") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{FEDERATION_JSON} is not JSON: {exc}") from None
    secrets = {key: read_secret(name) for key, name in SECRET_FILES.items()}
    for name in ("tls.crt", "tls.key", "ca.crt"):
        try:
            with open(TLS_DIR / name, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"{TLS_DIR / name} is not readable as uid {os.getuid()} ({exc.strerror}); "
                              "run: invoke ca.deploy (ca/deploy/jupyterhub/ is mounted at /etc/fl/tls/)") from None
    return settings(federation, env, secrets), crypt_key(secrets["crypt_key"])


def pgpass_line(hub: dict) -> str:
    """libpq's password file: host:port:database:user:password (':' and '\\' escaped)."""
    password = hub["db_password"].replace("\\", "\\\\").replace(":", "\\:")
    return f"{hub['db_host']}:5432:jupyterhub:jupyterhub:{password}\n"


def healthcheck() -> int:
    import ssl
    import urllib.request
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.crt"))
    context.check_hostname = False   # the certificate names jupyterhub and hub.<domain>
    try:
        with urllib.request.urlopen("https://127.0.0.1:8000/hub/health", timeout=4, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"jupyterhub healthcheck: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> None:
    if argv[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    try:
        hub, key = load()
    except ConfigError as exc:
        log(f"configuration error: {exc}")
        sys.exit(2)
    public = {k: v for k, v in hub.items() if k not in ("db_password", "cookie_secret", "oauth", "metrics_token")}
    if argv[:1] == ["check"]:
        print(json.dumps(public, indent=2))
        return
    SETTINGS_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(SETTINGS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(hub, handle)
    # The database password reaches libpq through a password file (never the URL, which
    # JupyterHub logs when it cannot connect).
    passfile = SETTINGS_FILE.parent / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pgpass_line(hub))
    env = dict(os.environ, FL_HUB_SETTINGS=str(SETTINGS_FILE), JUPYTERHUB_CRYPT_KEY=key,
               PGPASSFILE=str(passfile))
    log(f"starting JupyterHub at {hub['hub_url']} (notebooks: {hub['notebooks']['image']} on "
        f"{hub['notebooks']['network']}, through {hub['notebooks']['docker_api']})")
    os.chdir(SETTINGS_FILE.parent)   # the proxy's pid file and the hub's runtime files
    os.execvpe("jupyterhub", ["jupyterhub", "-f", CONFIG_FILE], env)


if __name__ == "__main__":
    main(sys.argv[1:])
