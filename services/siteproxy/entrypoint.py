#!/usr/bin/env python3
"""Entrypoint of an organisation's site proxy (NGINX), beside its SuperNode.

Usage (the image's ENTRYPOINT is ``python3 /usr/local/bin/entrypoint.py``):

    entrypoint.py              validate, render nginx.conf, ``nginx -t``, exec NGINX (foreground)
    entrypoint.py check        validate, render, ``nginx -t``; exit 0 when all is well
    entrypoint.py render       print the rendered nginx.conf (no file checks)
    entrypoint.py reload       validate, render, ``nginx -t``, ``nginx -s reload`` (a renewed
                               certificate, without restarting the container: the
                               SuperNode shares this container's network namespace)
    entrypoint.py healthcheck  GET https://127.0.0.1:<port>/healthz, CA-verified

Why it exists: flower-supernode cannot present a TLS client certificate, and the edge's
fleet host requires the organisation's. The SuperNode talks HTTPS to this proxy on the
loopback of the network namespace they share (the organisation's certificate carries
the SANs localhost and 127.0.0.1); the proxy forwards ``/v1/fleet/`` (only) to
FLEET_ADDRESS, presenting the organisation's certificate and verifying the edge's
against the project CA.

Importing this module has no side effects: ``load_settings``, ``parse_fleet_address``,
``resolvers_from``, ``context`` and ``render`` (needs jinja2) are pure helpers for unit
tests; ``tls_problems`` only reads files.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
TEMPLATE = "nginx.conf.j2"
# Next to this file (repository, host unit tests), then where the image installs it.
TEMPLATE_DIRS = (str(Path(__file__).resolve().parent), "/usr/local/share/fl-siteproxy")

DEFAULTS: dict[str, str] = {
    "FLEET_ADDRESS": "",             # host:port of the edge's fleet host (default fleet.<FL_DOMAIN>:443)
    "FL_DOMAIN": "",
    "LISTEN_ADDRESS": "127.0.0.1",   # the loopback shared with the SuperNode
    "LISTEN_PORT": "9443",
    "FL_TLS_DIR": "/etc/fl/tls",
    "RESOLVER": "",                  # default: the nameservers of /etc/resolv.conf (Docker's DNS)
    "RESOLVER_VALID": "10s",
    "CLIENT_MAX_BODY_SIZE": "0",     # 0 = no limit here; the edge enforces its own
    "PROXY_TIMEOUT": "3600s",
    "SITEPROXY_ACCESS_LOG": "0",     # "1": one line per request (method, path, status)
    "ERROR_LOG_LEVEL": "warn",
    "SITEPROXY_RUNTIME_DIR": "/tmp/siteproxy",
}
TRUE = {"1", "true", "yes", "on"}


class ConfigError(ValueError):
    """A setting that cannot work; the message names it."""


def fail(message: str, code: int = 2) -> None:
    print(f"siteproxy entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def load_settings(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if env.get(key, "").strip():
            out[key] = env[key].strip()
    return out


def parse_fleet_address(settings: Mapping[str, str]) -> tuple[str, int]:
    """(host, port) of the edge's fleet host."""
    value = settings["FLEET_ADDRESS"]
    if not value:
        if not settings["FL_DOMAIN"]:
            raise ConfigError("FLEET_ADDRESS is not set (e.g. fleet.fl.localhost:443), "
                              "and there is no FL_DOMAIN to derive it from")
        value = f"fleet.{settings['FL_DOMAIN']}:443"
    if "://" in value or "/" in value:
        raise ConfigError(f"FLEET_ADDRESS={value!r}: give host:port, without a scheme or path")
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "443"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"FLEET_ADDRESS={value!r} is not host:port")
    return host, int(port)


def resolvers_from(resolv_conf: str) -> list[str]:
    """Nameserver addresses of a resolv.conf, formatted for NGINX's resolver."""
    out = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            out.append(f"[{addr}]" if addr.version == 6 else str(addr))
    return out


def _size(value: str, name: str) -> str:
    import re
    if not re.fullmatch(r"\d+[kKmMgG]?", value):
        raise ConfigError(f"{name}={value!r} is not an NGINX size (e.g. 0, 512m, 1g)")
    return value


def _duration(value: str, name: str) -> str:
    import re
    if not re.fullmatch(r"\d+(ms|s|m|h)?", value):
        raise ConfigError(f"{name}={value!r} is not an NGINX time (e.g. 60s, 1h)")
    return value


def context(settings: Mapping[str, str], resolv_conf: str = "") -> dict[str, Any]:
    """The template's values (ConfigError naming a bad setting)."""
    host, port = parse_fleet_address(settings)
    listen_port = settings["LISTEN_PORT"]
    if not listen_port.isdigit() or not 0 < int(listen_port) < 65536:
        raise ConfigError(f"LISTEN_PORT={listen_port!r} is not a port number")
    try:
        listen = ipaddress.ip_address(settings["LISTEN_ADDRESS"])
    except ValueError:
        raise ConfigError(f"LISTEN_ADDRESS={settings['LISTEN_ADDRESS']!r} is not an IP address") from None
    if settings["RESOLVER"]:
        resolver = settings["RESOLVER"].replace(",", " ")
    else:
        found = resolvers_from(resolv_conf)
        if not found:
            raise ConfigError("no nameserver in /etc/resolv.conf: set RESOLVER "
                              "(Docker's embedded DNS is 127.0.0.11)")
        resolver = " ".join(found)
    level = settings["ERROR_LOG_LEVEL"]
    if level not in ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"):
        raise ConfigError(f"ERROR_LOG_LEVEL={level!r} is not an NGINX log level")
    return {
        "fleet_host": host,
        "fleet_port": port,
        "fleet_host_header": host if port == 443 else f"{host}:{port}",
        "listen_address": f"[{listen}]" if listen.version == 6 else str(listen),
        "listen_port": int(listen_port),
        "tls_dir": settings["FL_TLS_DIR"],
        "resolver": resolver,
        "resolver_valid": _duration(settings["RESOLVER_VALID"], "RESOLVER_VALID"),
        "client_max_body_size": _size(settings["CLIENT_MAX_BODY_SIZE"], "CLIENT_MAX_BODY_SIZE"),
        "proxy_timeout": _duration(settings["PROXY_TIMEOUT"], "PROXY_TIMEOUT"),
        "access_log": ("/dev/stdout site" if settings["SITEPROXY_ACCESS_LOG"].lower() in TRUE
                       else "off"),
        "error_log_level": level,
        "runtime_dir": settings["SITEPROXY_RUNTIME_DIR"],
    }


def render(values: Mapping[str, Any]) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(list(TEMPLATE_DIRS)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.get_template(TEMPLATE).render(**values)


def _handshake(cert: Path, key: Path, ca: Path, hostname: str) -> None:
    """A TLS handshake in memory: this certificate and key as server, a client that
    trusts only the CA and checks `hostname`. Raises ssl.SSLError when the pair does
    not match, the chain does not lead to the CA, the certificate expired or lacks the
    name."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert), str(key))
    client = ssl.create_default_context(cafile=str(ca))
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    for _ in range(10):
        done = True
        for obj, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            data = out.read()
            if data:
                peer_in.write(data)
        if done:
            return


def tls_problems(tls_dir: Path, listen_address: str = "127.0.0.1") -> list[str]:
    problems = []
    for name in TLS_FILES:
        path = tls_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing; mount ca/deploy/org-<org>/ there (invoke ca.deploy)")
        elif not os.access(path, os.R_OK):
            problems.append(f"{path} is not readable by uid {os.getuid()}; "
                            "run: invoke ca.deploy (the site key belongs to uid 10030)")
    if problems:
        return problems
    try:
        _handshake(tls_dir / "tls.crt", tls_dir / "tls.key", tls_dir / "ca.crt", listen_address)
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        problems.append(f"{tls_dir}/tls.crt does not serve {listen_address} for the "
                        f"SuperNode (it needs a matching key, the SAN IP:{listen_address}, "
                        f"validity, and to chain to ca.crt): {exc}")
    return problems


def write_config(settings: Mapping[str, str]) -> Path:
    values = context(settings, Path("/etc/resolv.conf").read_text()
                     if Path("/etc/resolv.conf").exists() else "")
    runtime = Path(values["runtime_dir"])
    for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (runtime / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = runtime / "nginx.conf"
    conf.write_text(render(values))
    return conf


def nginx_test(conf: Path) -> None:
    proc = subprocess.run(["nginx", "-e", "stderr", "-t", "-q", "-c", str(conf)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"nginx rejected {conf}:\n{(proc.stderr or proc.stdout).strip()}")


def healthcheck(settings: Mapping[str, str], timeout: float = 4.0) -> int:
    import urllib.request
    tls = Path(settings["FL_TLS_DIR"])
    addr = settings["LISTEN_ADDRESS"]
    host = f"[{addr}]" if ":" in addr else addr
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        with urllib.request.urlopen(f"https://{host}:{settings['LISTEN_PORT']}/healthz",
                                    context=ctx, timeout=timeout) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"siteproxy healthcheck: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else "run"
    settings = load_settings(os.environ)
    if mode == "healthcheck":
        sys.exit(healthcheck(settings))
    if mode == "render":
        try:
            print(render(context(settings, Path("/etc/resolv.conf").read_text()
                                 if Path("/etc/resolv.conf").exists() else "")), end="")
        except ConfigError as exc:
            fail(str(exc))
        return
    if mode not in ("run", "check", "reload"):
        fail(f"unknown mode {mode!r} (run, check, render, reload, healthcheck)")
    try:
        context(settings, "nameserver 127.0.0.1")   # settings first, before the files
    except ConfigError as exc:
        fail(str(exc))
    problems = tls_problems(Path(settings["FL_TLS_DIR"]), settings["LISTEN_ADDRESS"])
    if problems:
        fail("cannot start:\n  - " + "\n  - ".join(problems))
    try:
        conf = write_config(settings)
    except ConfigError as exc:
        fail(str(exc))
    nginx_test(conf)
    if mode == "check":
        print("siteproxy entrypoint: configuration OK")
        return
    if mode == "reload":
        subprocess.run(["nginx", "-e", "stderr", "-c", str(conf), "-s", "reload"], check=True)
        print("siteproxy entrypoint: reloaded")
        return
    host, port = parse_fleet_address(settings)
    print(f"siteproxy entrypoint: https://{settings['LISTEN_ADDRESS']}:{settings['LISTEN_PORT']}"
          f"/v1/fleet/ -> https://{host}:{port} (client certificate "
          f"{settings['FL_TLS_DIR']}/tls.crt)", flush=True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    os.execvp(nginx, [nginx, "-e", "stderr", "-c", str(conf)])


if __name__ == "__main__":
    main(sys.argv)
