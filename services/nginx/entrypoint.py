#!/usr/bin/env python3
"""Entrypoint of the edge container (NGINX in front of every public hostname).

Usage (the container's ENTRYPOINT is ``python3 /usr/local/bin/entrypoint.py``):

    entrypoint.py              validate, render, ``nginx -t``, exec NGINX (foreground)
    entrypoint.py check        validate, render, ``nginx -t``; exit 0 when all is well
    entrypoint.py reload       like check, then ``nginx -s reload`` (new CRL/certificate)
    entrypoint.py render       print the rendered nginx.conf (no file checks)
    entrypoint.py healthcheck  GET https://<domain>/healthz on 127.0.0.1:443, CA-verified

Importing this module has no side effects: ``load_settings``, ``build_config``,
``render``, ``render_index``, ``missing_tls_files``, ``san_problems``, ``parse_zones``
and ``crl_next_update`` are pure helpers for unit tests (``render`` needs jinja2).

Facts come from the tasks, never from here: the public hostnames and which trust zones
may use each one (``hostnames`` and ``zones`` in /etc/fl/federation.json, from
fedops/services.py) and each zone's subnet (FL_ZONES, from the Compose networks).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

TLS_FILES = ("tls.crt", "tls.key", "ca.crt", "crl.pem")
FEDERATION_FILE = "/etc/fl/federation.json"
STATIC_FILES = ("landing.js", "landing.css")
# Where the templates are looked for: next to this file (the repository, host
# unit tests), then where the image installs them.
TEMPLATE_DIRS = (str(Path(__file__).resolve().parent), "/usr/local/share/fl-edge")

# The public hosts the edge has server blocks for (their names and zones come from
# federation.json).
HOSTS = ("landing", "auth", "fleet", "control", "hub", "grafana", "prometheus", "alertmanager")
# Zones: the internal networks the edge tells apart by source address; everything else
# reached it through a published port ("external", always allowed).
ZONES = ("services", "clients", "monitoring", "superlink", "notebooks")

DEFAULT_UPSTREAMS = {
    "keycloak": "keycloak:8443",      # HTTPS, verified against the project CA
    "keycloak_management": "keycloak:9000",  # HTTPS, verified: /metrics for the monitoring zone
    "superlink": "superlink:8000",    # HTTPS, verified against the project CA
    "ctlgate": "ctlgate:8081",        # HTTPS, verified: /status, /auth, login calls
    "postgres": "postgres:5432",      # TCP pass-through (administration port)
    "jupyterhub": "jupyterhub:8000",  # HTTPS (its proxy), verified against the project CA
    "grafana": "grafana:3000",
    "prometheus": "prometheus:9090",
    "alertmanager": "alertmanager:9093",
    "oauth2_proxy": "oauth2-proxy:4180",  # HTTPS, verified: sign-on for the monitoring UIs
}

DEFAULTS: dict[str, Any] = {
    "https_port": 443,            # the port users type (published port), not the container's
    "tls_dir": "/etc/fl/tls",
    "runtime_dir": "/tmp/nginx",
    "resolver": "127.0.0.11",     # Docker's embedded DNS
    "resolver_valid": "10s",
    "worker_processes": "2",
    "error_log_level": "warn",
    "ecdh_curves": "X25519MLKEM768:X25519:prime256v1:secp384r1",
    "block_master_realm": True,
    "status_port": 8080,          # internal listener: stub_status, SuperLink health, Keycloak metrics
    # Debian's dynamic stream module (libnginx-mod-stream), for the pass-through.
    "stream_module": "/usr/lib/nginx/modules/ngx_stream_module.so",
    "admin_postgres_port": 5432,  # pass-through to PostgreSQL (published on the admin address)
    "admin_keycloak_port": 8443,  # pass-through to Keycloak's own HTTPS (admin console)
    "realm": "flowerfl",
    "connection_name": "fl",      # the flwr CLI connection `invoke fl.connection` writes
    "title": "Federated Learning Platform",
}

# Environment variables read by load_settings() (all optional except the domain,
# which may come from the federation file instead).
ENV_SETTINGS = {
    "FL_TLS_DIR": "tls_dir",
    "FL_NGINX_RUNTIME_DIR": "runtime_dir",
    "FL_RESOLVER": "resolver",
    "FL_NGINX_WORKERS": "worker_processes",
    "FL_NGINX_ERROR_LOG_LEVEL": "error_log_level",
    "FL_NGINX_ECDH_CURVES": "ecdh_curves",
    "FL_NGINX_STATUS_PORT": "status_port",
    "FL_KEYCLOAK_REALM": "realm",
    "FL_EDGE_BLOCK_MASTER_REALM": "block_master_realm",
    "FL_ZONES": "zone_subnets",
    "FL_NGINX_STREAM_MODULE": "stream_module",
}

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CURVES_RE = re.compile(r"^[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)*$")
_DURATION_RE = re.compile(r"^[0-9]{1,6}[smh]?$")
_TITLE_RE = re.compile(r"^[^\x00-\x1f<>]{1,80}$")
_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")


class ConfigError(Exception):
    """A missing or invalid input; the message says what to do."""


def log(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- pure helpers
def validate_hostname(value: str, what: str = "domain") -> str:
    """Return the lower-cased hostname or raise ConfigError."""
    name = str(value).strip().lower().rstrip(".")
    if not _HOSTNAME_RE.match(name):
        raise ConfigError(f"{what} {value!r} is not a valid DNS name")
    return name


def parse_hostport(value: str, what: str) -> dict[str, Any]:
    """Parse 'host:port' (DNS name or IPv4) into {'host', 'port', 'hostport'}."""
    host, sep, port = str(value).strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {value!r} must be host:port")
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        host = validate_hostname(host, what)
    return {"host": host, "port": int(port), "hostport": f"{host}:{int(port)}"}


def _as_port(value: Any, what: str, allow_zero: bool = False) -> int:
    text = str(value).strip()
    if not text.isdigit() or not (0 if allow_zero else 1) <= int(text) < 65536:
        raise ConfigError(f"{what} {value!r} is not a valid port")
    return int(text)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _checked(value: Any, regex: re.Pattern[str], what: str) -> str:
    text = str(value).strip()
    if not regex.match(text):
        raise ConfigError(f"{what} {value!r} is not valid")
    return text


def parse_zones(spec: str | Mapping[str, str]) -> dict[str, str]:
    """'services=172.20.0.0/16,clients=...' (or such a mapping) -> {zone: subnet}, validated."""
    if isinstance(spec, Mapping):
        spec = ",".join(f"{k}={v}" for k, v in spec.items())
    zones: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in str(spec).split(","))):
        name, _, cidr = item.partition("=")
        name = name.strip()
        if name not in ZONES:
            raise ConfigError(f"FL_ZONES names an unknown zone {name!r} (known: {', '.join(ZONES)})")
        try:
            zones[name] = str(ipaddress.ip_network(cidr.strip(), strict=True))
        except ValueError as exc:
            raise ConfigError(f"FL_ZONES entry {item!r} is not zone=CIDR ({exc})") from None
    return zones


def load_settings(
    env: Mapping[str, str], federation_file: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Collect settings from the environment and the federation file (no defaults applied).

    The domain, the hostnames and their zones come from the federation file (rendered
    by the tasks); the zones' subnets from FL_ZONES. Upstreams can be overridden with FL_UPSTREAM_<NAME>=host:port.
    """
    settings: dict[str, Any] = {}
    federation_path = Path(federation_file or env.get("FL_FEDERATION_FILE") or FEDERATION_FILE)
    if not federation_path.is_file():
        raise ConfigError(f"{federation_path} does not exist: mount build/federation.json (invoke up renders it)")
    try:
        federation = json.loads(federation_path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {federation_path}: {exc}") from exc
    for key in ("domain", "hostnames", "zones"):
        if not federation.get(key):
            raise ConfigError(f"{federation_path} has no key {key!r}: render it with the tasks (invoke up)")
        settings[key] = federation[key]
    for key, setting in (("connection_name", "connection_name"), ("public_https_port", "https_port")):
        if federation.get(key):
            settings[setting] = federation[key]
    for variable, key in ENV_SETTINGS.items():
        if env.get(variable, "").strip():
            settings[key] = env[variable].strip()
    upstreams = {}
    for name in DEFAULT_UPSTREAMS:
        value = env.get(f"FL_UPSTREAM_{name.upper()}", "").strip()
        if value:
            upstreams[name] = value
    if upstreams:
        settings["upstreams"] = upstreams
    return settings


def build_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Apply defaults to ``config`` and validate every value that reaches a template."""
    if not config.get("domain"):
        raise ConfigError("the domain is not set ('domain' in the federation file)")
    cfg: dict[str, Any] = {**DEFAULTS, **{k: v for k, v in config.items() if k != "upstreams"}}
    cfg["domain"] = validate_hostname(cfg["domain"])
    # {name: hostname} from the federation file (or "hosts" of a configuration built
    # already: build_config is idempotent)
    raw_hosts = config.get("hosts") or config.get("hostnames") or {}
    if not isinstance(raw_hosts, Mapping):
        raise ConfigError("the federation file's 'hostnames' must map names to hostnames")
    missing = [h for h in HOSTS if h not in raw_hosts]
    if missing:
        raise ConfigError(f"the federation file names no hostname for {', '.join(missing)}")
    cfg["hosts"] = {h: validate_hostname(raw_hosts[h], f"hostname of {h}") for h in HOSTS}
    cfg["hostnames"] = list(cfg["hosts"].values())
    raw_zones = config.get("zones") or {}
    cfg["host_zones"] = {}
    for h in HOSTS:
        zones = raw_zones.get(h, [])
        unknown = [z for z in zones if z not in ZONES]
        if unknown:
            raise ConfigError(f"the federation file gives {h} unknown zone(s) {', '.join(unknown)}")
        cfg["host_zones"][h] = ["external", *zones]
    cfg["zone_subnets"] = parse_zones(cfg.get("zone_subnets") or "")
    for port in ("admin_postgres_port", "admin_keycloak_port"):
        cfg[port] = _as_port(cfg[port], port, allow_zero=True)
    if cfg["stream_module"]:
        cfg["stream_module"] = _checked(cfg["stream_module"], _PATH_RE, "FL_NGINX_STREAM_MODULE")
    if (cfg["admin_postgres_port"] or cfg["admin_keycloak_port"]) and not cfg["stream_module"]:
        raise ConfigError("the administration ports need the stream module (FL_NGINX_STREAM_MODULE)")
    cfg["https_port"] = _as_port(cfg["https_port"], "public_https_port (federation file)")
    cfg["port_suffix"] = "" if cfg["https_port"] == 443 else f":{cfg['https_port']}"
    cfg["status_port"] = _as_port(cfg["status_port"], "FL_NGINX_STATUS_PORT", allow_zero=True)
    if cfg["status_port"] in (80, 443):
        raise ConfigError("FL_NGINX_STATUS_PORT must not be 80 or 443")
    for key, what in (("tls_dir", "FL_TLS_DIR"), ("runtime_dir", "FL_NGINX_RUNTIME_DIR")):
        cfg[key] = _checked(cfg[key], _PATH_RE, what).rstrip("/") or "/"
    resolver = str(cfg["resolver"]).strip()
    try:
        cfg["resolver"] = str(ipaddress.IPv4Address(resolver))
    except ValueError:
        if ":" in resolver:
            cfg["resolver"] = parse_hostport(resolver, "FL_RESOLVER")["hostport"]
        else:
            cfg["resolver"] = validate_hostname(resolver, "FL_RESOLVER")
    cfg["resolver_valid"] = _checked(cfg["resolver_valid"], _DURATION_RE, "resolver_valid")
    workers = str(cfg["worker_processes"]).strip()
    if workers != "auto" and not (workers.isdigit() and 0 < int(workers) <= 256):
        raise ConfigError(f"FL_NGINX_WORKERS {workers!r} must be 'auto' or 1..256")
    cfg["worker_processes"] = workers
    if cfg["error_log_level"] not in _LOG_LEVELS:
        raise ConfigError(f"FL_NGINX_ERROR_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    cfg["ecdh_curves"] = _checked(cfg["ecdh_curves"], _CURVES_RE, "FL_NGINX_ECDH_CURVES")
    cfg["block_master_realm"] = _as_bool(cfg["block_master_realm"])
    cfg["realm"] = _checked(cfg["realm"], _NAME_RE, "FL_KEYCLOAK_REALM")
    cfg["connection_name"] = _checked(cfg["connection_name"], _NAME_RE, "connection_name")
    cfg["title"] = _checked(cfg["title"], _TITLE_RE, "title")
    raw_upstreams = {**DEFAULT_UPSTREAMS, **dict(config.get("upstreams") or {})}
    unknown = set(raw_upstreams) - set(DEFAULT_UPSTREAMS)
    if unknown:
        raise ConfigError(f"unknown upstream(s): {', '.join(sorted(unknown))}")
    cfg["upstreams"] = {
        name: parse_hostport(
            value["hostport"] if isinstance(value, Mapping) else value, f"FL_UPSTREAM_{name.upper()}"
        )
        for name, value in raw_upstreams.items()
    }
    return cfg


def _environment(autoescape: bool):
    import jinja2  # imported here so that the rest of the module works without it

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(TEMPLATE_DIRS)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def render(config: Mapping[str, Any]) -> str:
    """Render nginx.conf.j2 for ``config`` (at least {'domain': ...}); returns the text."""
    cfg = build_config(config)
    return _environment(autoescape=False).get_template("nginx.conf.j2").render(**cfg)


# Prometheus' console page of the federation (services/prometheus/consoles/federation.html).
FEDERATION_CONSOLE = "/consoles/federation.html"


def landing_services(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the landing page: name, URL, purpose and the status keys they answer to."""
    h, p = cfg["hosts"], cfg["port_suffix"]
    return [
        {"name": "Single sign-on (Keycloak)", "url": f"https://{h['auth']}{p}/realms/{cfg['realm']}/account/",
         "link": True, "purpose": "your account, sign-in for every service", "status_keys": ["auth", "keycloak"]},
        {"name": "JupyterHub", "url": f"https://{h['hub']}{p}/", "link": True,
         "purpose": "notebooks for researchers", "status_keys": ["hub", "jupyterhub"]},
        {"name": "Grafana", "url": f"https://{h['grafana']}{p}/", "link": True,
         "purpose": "dashboards", "status_keys": ["grafana"]},
        {"name": "Prometheus", "url": f"https://{h['prometheus']}{p}/", "link": True,
         "purpose": "metrics", "status_keys": ["prometheus"]},
        {"name": "Federation overview", "url": f"https://{h['prometheus']}{p}{FEDERATION_CONSOLE}", "link": True,
         "purpose": "SuperNodes, runs, rounds, certificates and alerts on one page (no Grafana needed)",
         "status_keys": ["prometheus"]},
        {"name": "Alertmanager", "url": f"https://{h['alertmanager']}{p}/", "link": True,
         "purpose": "alerts and silences", "status_keys": ["alertmanager"]},
        {"name": "Control API (SuperLink)", "url": f"{h['control']}{p}", "link": False,
         "purpose": "the flwr CLI, after flwr login", "status_keys": ["control", "ctlgate", "superlink"]},
        {"name": "Fleet API (SuperLink)", "url": f"{h['fleet']}{p}", "link": False,
         "purpose": "SuperNodes, with their organisation certificate", "status_keys": ["fleet", "superlink"]},
    ]


def render_index(config: Mapping[str, Any]) -> str:
    """Render the landing page (index.html.j2) for ``config``."""
    cfg = build_config(config)
    return _environment(autoescape=True).get_template("index.html.j2").render(
        services=landing_services(cfg), **cfg
    )


def missing_tls_files(tls_dir: str | os.PathLike[str]) -> list[str]:
    """Names among tls.crt, tls.key, ca.crt, crl.pem that are not files in ``tls_dir``."""
    return [name for name in TLS_FILES if not (Path(tls_dir) / name).is_file()]


def unreadable_tls_files(tls_dir: str | os.PathLike[str]) -> list[str]:
    """Human-readable problems for TLS files this process cannot read."""
    problems = []
    for name in TLS_FILES:
        path = Path(tls_dir) / name
        try:
            with path.open("rb") as handle:
                if not handle.read(1):
                    problems.append(f"{path} is empty")
        except OSError as exc:
            try:
                st = path.stat()
                owner = f" (owner uid {st.st_uid}, mode {st.st_mode & 0o777:04o})"
            except OSError:
                owner = ""
            problems.append(f"cannot read {path} as uid {os.getuid()}{owner}: {exc.strerror}")
    return problems


def _name_matches(pattern: str, name: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def san_problems(dns_names: list[str], wanted: list[str]) -> list[str]:
    """Hostnames in ``wanted`` that no SAN DNS name in ``dns_names`` covers."""
    return [host for host in wanted if not any(_name_matches(san, host) for san in dns_names)]


def certificate_dns_names(cert_file: str | os.PathLike[str]) -> list[str] | None:
    """SAN DNS names of a PEM certificate (None when this Python cannot decode it)."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        decoded = decode(str(cert_file))
    except (ssl.SSLError, OSError, ValueError):
        return None
    return [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """Split DER bytes into (tag, content) pairs (definite lengths only)."""
    items, i = [], 0
    while i < len(data):
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[i:i + count], "big")
            i += count
        items.append((tag, data[i:i + length]))
        i += length
    return items


def crl_next_update(pem: bytes) -> datetime.datetime | None:
    """nextUpdate of a PEM CRL (RFC 5280 TBSCertList), or None when absent/unreadable."""
    try:
        text = pem.decode("ascii")
        body = text.split("-----BEGIN X509 CRL-----", 1)[1].split("-----END X509 CRL-----", 1)[0]
        (tag, certificate_list), *_ = _der_items(base64.b64decode("".join(body.split())))
        (tag, tbs), *_ = _der_items(certificate_list)
        fields = _der_items(tbs)
        if fields and fields[0][0] == 0x02:  # version
            fields = fields[1:]
        times = [(t, v) for t, v in fields[2:4] if t in (0x17, 0x18)]  # after signature, issuer
        if len(times) < 2:
            return None
        tag, value = times[1]
        stamp = value.decode("ascii")
        fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
        return datetime.datetime.strptime(stamp, fmt).replace(tzinfo=datetime.timezone.utc)
    except (IndexError, ValueError, UnicodeDecodeError, TypeError):
        return None


# ------------------------------------------------------------- side effects
def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def check_tls(cfg: Mapping[str, Any]) -> None:
    tls_dir = cfg["tls_dir"]
    missing = missing_tls_files(tls_dir)
    if missing:
        names = ", ".join(f"{tls_dir}/{name}" for name in missing)
        raise ConfigError(
            f"missing TLS file(s): {names}. The edge needs tls.crt, tls.key, ca.crt and crl.pem "
            "(ca/deploy/nginx/ on the host, mounted read-only at /etc/fl/tls) - run: invoke ca.deploy"
        )
    problems = unreadable_tls_files(tls_dir)
    if problems:
        raise ConfigError(
            "; ".join(problems) + ". tls.key must be owned by uid 10030 (the nginx user) - run: invoke ca.deploy"
        )
    next_update = crl_next_update((Path(tls_dir) / "crl.pem").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    if next_update is None:
        log(f"WARNING: cannot read the next-update date of {tls_dir}/crl.pem (is it a PEM CRL?)")
    elif next_update <= now:
        log(f"WARNING: {tls_dir}/crl.pem expired on {next_update:%Y-%m-%d %H:%M} UTC: every organisation "
            "certificate is refused (FAILED:CRL has expired) - run: invoke ca.deploy, then reload")
    elif next_update - now < datetime.timedelta(days=14):
        log(f"WARNING: {tls_dir}/crl.pem expires on {next_update:%Y-%m-%d %H:%M} UTC - renew it (invoke ca.deploy)")
    names = certificate_dns_names(Path(tls_dir) / "tls.crt")
    if names is not None:
        uncovered = san_problems(names, cfg["hostnames"])
        if uncovered:
            log(f"WARNING: {tls_dir}/tls.crt has no SAN for: {', '.join(uncovered)} "
                f"(it has: {', '.join(names) or 'none'}); browsers and clients will refuse those names")


def write_runtime_files(cfg: Mapping[str, Any]) -> Path:
    """Render nginx.conf and the landing page into the runtime directory; return the conf path."""
    runtime = Path(cfg["runtime_dir"])
    html = runtime / "html"
    for directory in (runtime, html, *(runtime / d for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = runtime / "nginx.conf"
    _write(conf, render(cfg))
    _write(html / "index.html", render_index(cfg))
    for name in STATIC_FILES:
        for directory in TEMPLATE_DIRS:
            source = Path(directory) / name
            if source.is_file():
                shutil.copyfile(source, html / name)
                break
        else:
            raise ConfigError(f"static file {name} not found in {', '.join(TEMPLATE_DIRS)}")
    return conf


def nginx_test(conf: Path) -> None:
    result = subprocess.run(["nginx", "-e", "stderr", "-c", str(conf), "-t", "-q"], check=False)
    if result.returncode != 0:
        raise ConfigError(f"nginx -t failed for {conf} (see the messages above)")


def prepare(env: Mapping[str, str]) -> tuple[dict[str, Any], Path]:
    cfg = build_config(load_settings(env))
    check_tls(cfg)
    conf = write_runtime_files(cfg)
    nginx_test(conf)
    return cfg, conf


def healthcheck(env: Mapping[str, str]) -> int:
    """GET https://<domain>/healthz on 127.0.0.1:443 with SNI and CA verification."""
    cfg = build_config(load_settings(env))
    context = ssl.create_default_context(cafile=f"{cfg['tls_dir']}/ca.crt")
    # A liveness probe: chain and hostname are verified, but not Python 3.13's
    # stricter RFC 5280 profile checks (those are the CA tooling's business).
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    landing = cfg["hosts"]["landing"]
    request = f"GET /healthz HTTP/1.1\r\nHost: {landing}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", 443), timeout=4) as raw:
            with context.wrap_socket(raw, server_hostname=landing) as tls:
                tls.sendall(request.encode("ascii"))
                status_line = tls.recv(256).split(b"\r\n", 1)[0].decode("latin-1")
    except (OSError, ssl.SSLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status_line.split(" ")[1:2] == ["200"]:
        return 0
    print(f"unhealthy: {status_line!r}", file=sys.stderr)
    return 1


def serving_workers(proc: Path = Path("/proc")) -> set[int]:
    """PIDs of NGINX workers that accept new connections (not those shutting down)."""
    pids = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            except OSError:
                continue
            if title == b"nginx: worker process":
                pids.add(int(entry.name))
    return pids


def wait_for_new_workers(before: set[int], timeout: float = 15.0, proc: Path = Path("/proc")) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = serving_workers(proc)
        if now and not (now & before):
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "run"
    env = os.environ
    try:
        if command == "healthcheck":
            return healthcheck(env)
        if command == "render":
            sys.stdout.write(render(load_settings(env)))
            return 0
        if command not in ("run", "check", "reload"):
            raise ConfigError(f"unknown command {command!r} (run, check, reload, render, healthcheck)")
        cfg, conf = prepare(env)
        if command == "check":
            log(f"configuration for {cfg['domain']} is valid ({conf})")
            return 0
        if command == "reload":
            before = serving_workers()
            result = subprocess.run(["nginx", "-e", "stderr", "-c", str(conf), "-s", "reload"], check=False)
            if result.returncode != 0:
                return result.returncode
            # Return only once the new workers accept connections: a caller that
            # revoked a certificate can rely on the next handshake seeing the new CRL.
            if wait_for_new_workers(before):
                log("reloaded: new connections use the new configuration, certificate and CRL")
                return 0
            log("ERROR: reload signalled but the old workers still serve after 15 s: see the error log")
            return 1
        log(f"serving {', '.join(cfg['hostnames'])} (configuration {conf})")
        os.execvp("nginx", ["nginx", "-e", "stderr", "-c", str(conf), "-g", "daemon off;"])
    except ConfigError as exc:
        log(f"ERROR: {exc}")
        return 2
    return 0  # not reached after execvp


if __name__ == "__main__":
    sys.exit(main(sys.argv))
