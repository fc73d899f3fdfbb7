"""Runtime configuration, read from the environment (set by entrypoint.py).

Everything has a default derived from the federation's domain, so the only value a
deployment must provide is the domain (``FL_DOMAIN`` or ``/etc/fl/federation.json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FEDERATION_JSON = Path("/etc/fl/federation.json")
DEFAULT_CA_FILE = "/etc/fl/tls/ca.crt"
# ctlgate serves HTTPS with its own certificate from the project CA: the edge verifies
# it (the control. host carries bearer and refresh tokens).
DEFAULT_TLS_CERT = "/etc/fl/tls/tls.crt"
DEFAULT_TLS_KEY = "/etc/fl/tls/tls.key"

# Landing-page probes: name=url[|fallback-url], comma separated. Schemes: tcp://,
# http(s)://host:port/path (2xx/3xx is up), grpc://host:port (grpc.health.v1 SERVING).
# The SuperLink is on a network only the edge joins: its health is read through the
# edge's internal listener (services/nginx, /superlink/health).
DEFAULT_PROBES = (
    "postgres=tcp://postgres:5432,"
    "keycloak=https://keycloak:9000/health/ready,"
    "superlink=http://nginx:8080/superlink/health,"
    "jupyterhub=tcp://jupyterhub:8000,"
    "grafana=tcp://grafana:3000,"
    "prometheus=tcp://prometheus:9090"
)


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def parse_probes(spec: str) -> dict[str, list[str]]:
    """Parse ``name=url|url,name=url`` into an ordered mapping."""
    probes: dict[str, list[str]] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, urls = item.partition("=")
        name = name.strip()
        if not sep or not name or not urls.strip():
            raise ConfigError(f"CTLGATE_PROBES entry {item!r} is not name=url[|url]")
        targets = [u.strip() for u in urls.split("|") if u.strip()]
        for url in targets:
            scheme = url.partition("://")[0]
            if scheme not in {"tcp", "http", "https", "grpc"}:
                raise ConfigError(
                    f"CTLGATE_PROBES target {url!r}: scheme must be tcp, http, https "
                    "or grpc"
                )
        probes[name] = targets
    return probes


def read_federation(federation_json: Path = FEDERATION_JSON) -> dict:
    """/etc/fl/federation.json (rendered by the tasks), or {} when it is absent."""
    if not federation_json.is_file():
        return {}
    try:
        data = json.loads(federation_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{federation_json}: cannot read JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_domain(env: dict[str, str], federation_json: Path = FEDERATION_JSON) -> str:
    """``FL_DOMAIN`` wins, else ``domain`` from /etc/fl/federation.json."""
    domain = env.get("FL_DOMAIN", "").strip() or str(read_federation(federation_json).get("domain", "")).strip()
    if not domain:
        raise ConfigError(
            f"no domain: set FL_DOMAIN or provide 'domain' in {federation_json}"
        )
    if "/" in domain or ":" in domain or " " in domain:
        raise ConfigError(f"domain {domain!r} must be a bare host name")
    return domain.rstrip(".").lower()


@dataclass(frozen=True)
class Config:
    """Everything the gateway needs at run time."""

    domain: str
    issuer: str
    keycloak_realm_url: str  # base used for back-channel calls (JWKS, device, token)
    audience: str = "ctlgate"
    role: str = "superlink_user"
    # may call the Control API's read-only methods only (ctlgate/methods.py); "" for none
    read_role: str = "superlink_viewer"
    cli_client_id: str = "flwr-cli"
    device_scope: str = "openid"
    ca_file: str | None = DEFAULT_CA_FILE
    tls_cert: str | None = DEFAULT_TLS_CERT
    tls_key: str | None = DEFAULT_TLS_KEY
    listen_host: str = "0.0.0.0"
    listen_port: int = 8081
    leeway: float = 0.0
    rfc6750_errors: bool = False
    jwks_ttl: float = 300.0
    jwks_min_refresh: float = 10.0
    http_timeout: float = 10.0
    probes: dict[str, list[str]] = field(default_factory=lambda: parse_probes(DEFAULT_PROBES))
    probe_timeout: float = 1.5
    status_ttl: float = 5.0
    log_level: str = "INFO"

    @property
    def jwks_url(self) -> str:
        return f"{self.keycloak_realm_url}/protocol/openid-connect/certs"

    @property
    def device_url(self) -> str:
        return f"{self.keycloak_realm_url}/protocol/openid-connect/auth/device"

    @property
    def token_url(self) -> str:
        return f"{self.keycloak_realm_url}/protocol/openid-connect/token"

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, federation_json: Path = FEDERATION_JSON
    ) -> Config:
        env = dict(os.environ if env is None else env)
        domain = read_domain(env, federation_json)
        federation = read_federation(federation_json)
        realm = env.get("CTLGATE_REALM", "").strip() or "flowerfl"
        # The issuer is Keycloak's public URL (with the published port unless 443:
        # urls.auth in federation.json); back-channel calls go to the edge's auth.
        # alias inside the engine, on its port 443.
        auth_host = str((federation.get("hostnames") or {}).get("auth") or f"auth.{domain}")
        auth_url = str((federation.get("urls") or {}).get("auth") or f"https://{auth_host}")
        issuer = (
            env.get("CTLGATE_ISSUER", "").strip() or f"{auth_url}/realms/{realm}"
        ).rstrip("/")
        kc_base = (
            env.get("CTLGATE_KEYCLOAK_URL", "").strip() or f"https://{auth_host}"
        ).rstrip("/")
        listen = env.get("CTLGATE_LISTEN", "").strip() or "0.0.0.0:8081"
        host, _, port = listen.rpartition(":")
        try:
            port_num = int(port)
        except ValueError:
            raise ConfigError(f"CTLGATE_LISTEN={listen!r} is not HOST:PORT") from None
        ca_file = env.get("CTLGATE_CA_FILE", DEFAULT_CA_FILE).strip() or None
        tls_cert = env.get("CTLGATE_TLS_CERT", DEFAULT_TLS_CERT).strip() or None
        tls_key = env.get("CTLGATE_TLS_KEY", DEFAULT_TLS_KEY).strip() or None
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("CTLGATE_TLS_CERT and CTLGATE_TLS_KEY are set together or not at all")
        for url, name in ((issuer, "CTLGATE_ISSUER"), (kc_base, "CTLGATE_KEYCLOAK_URL")):
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"{name}={url!r} is not an http(s) URL")
        return cls(
            domain=domain,
            issuer=issuer,
            keycloak_realm_url=f"{kc_base}/realms/{realm}",
            audience=env.get("CTLGATE_AUDIENCE", "").strip() or "ctlgate",
            role=env.get("CTLGATE_ROLE", "").strip() or "superlink_user",
            read_role=env.get("CTLGATE_READ_ROLE", "superlink_viewer").strip(),
            cli_client_id=env.get("CTLGATE_CLI_CLIENT_ID", "").strip() or "flwr-cli",
            device_scope=env.get("CTLGATE_DEVICE_SCOPE", "openid").strip(),
            ca_file=ca_file,
            tls_cert=tls_cert,
            tls_key=tls_key,
            listen_host=host or "0.0.0.0",
            listen_port=port_num,
            leeway=_float(env, "CTLGATE_LEEWAY", 0.0),
            rfc6750_errors=_truthy(env.get("CTLGATE_RFC6750_ERRORS")),
            jwks_ttl=_float(env, "CTLGATE_JWKS_TTL", 300.0),
            jwks_min_refresh=_float(env, "CTLGATE_JWKS_MIN_REFRESH", 10.0),
            http_timeout=_float(env, "CTLGATE_HTTP_TIMEOUT", 10.0),
            probes=parse_probes(env.get("CTLGATE_PROBES", "").strip() or DEFAULT_PROBES),
            probe_timeout=_float(env, "CTLGATE_PROBE_TIMEOUT", 1.5),
            status_ttl=_float(env, "CTLGATE_STATUS_TTL", 5.0),
            log_level=(env.get("CTLGATE_LOG_LEVEL", "").strip() or "INFO").upper(),
        )
