#!/usr/bin/env python3
"""Prometheus entrypoint: validate, render prometheus.yml from the federation, then exec
Prometheus as its user.

Scrape targets follow what exists: the services are found by name in the engine's DNS on
the monitoring network (dns_sd_configs), so a service that is not running (the GPU
profile's DCGM exporter, a phase not built yet) is no target and no error; the blackbox
exporter probes every public hostname of /etc/fl/federation.json through the edge.

  entrypoint.py              render, check with promtool, exec prometheus
  entrypoint.py check        render and check, print the configuration, exit
  entrypoint.py healthcheck  ask the running server's /-/ready

Pure helpers (load_federation, settings, render_config) are importable for unit tests.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

FEDERATION = Path(os.environ.get("FL_FEDERATION_JSON", "/etc/fl/federation.json"))
TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
SHARE = Path(os.environ.get("FL_TEMPLATES", "/usr/local/share/fl-prometheus"))
CONFIG = Path(os.environ.get("FL_PROMETHEUS_CONFIG", "/tmp/prometheus/prometheus.yml"))
DATA = Path("/prometheus")
LISTEN_PORT = 9090

# Prometheus' own duration and size syntax (retention, intervals).
DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SIZE_RE = re.compile(r"^[0-9]+(B|KB|MB|GB|TB|PB|EB)$")
DEFAULTS = {
    "FL_PROMETHEUS_RETENTION": "15d",
    "FL_PROMETHEUS_RETENTION_SIZE": "",
    "FL_PROMETHEUS_SCRAPE_INTERVAL": "30s",
    "FL_PROMETHEUS_EXTERNAL_URL": "",
}


def fail(message: str) -> None:
    print(f"prometheus entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_federation(path: Path = FEDERATION) -> dict:
    try:
        fed = json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path} is missing; mount build/federation.json there (invoke up renders it)")
    except (OSError, ValueError) as exc:
        fail(f"{path} is not readable JSON: {exc}")
    for key in ("domain", "hostnames", "organisations"):
        if key not in fed:
            fail(f"{path} has no {key!r}; run: invoke up (it renders build/federation.json)")
    return fed


def settings(env: dict[str, str]) -> dict[str, str]:
    """The FL_PROMETHEUS_* settings, validated (empty means the default)."""
    out = {k: (env.get(k) or "").strip() or v for k, v in DEFAULTS.items()}
    for key in ("FL_PROMETHEUS_RETENTION", "FL_PROMETHEUS_SCRAPE_INTERVAL"):
        if not DURATION_RE.match(out[key]):
            fail(f"{key}={out[key]!r} is not a Prometheus duration (e.g. 15d, 30s)")
    size = out["FL_PROMETHEUS_RETENTION_SIZE"]
    if size and not SIZE_RE.match(size):
        fail(f"FL_PROMETHEUS_RETENTION_SIZE={size!r} is not a size (e.g. 10GB) or empty")
    url = out["FL_PROMETHEUS_EXTERNAL_URL"]
    if url and not url.startswith(("http://", "https://")):
        fail(f"FL_PROMETHEUS_EXTERNAL_URL={url!r} is not an http(s) URL")
    return out


def render_config(fed: dict, values: dict[str, str], share: Path = SHARE, tls: Path = TLS) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(share)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    hosts = sorted(fed["hostnames"].items())
    return env.get_template("prometheus.yml.j2").render(
        domain=fed["domain"], public_hosts=hosts, organisations=fed["organisations"],
        scrape_interval=values["FL_PROMETHEUS_SCRAPE_INTERVAL"], ca_file=str(tls / "ca.crt"),
        rules_dir=str(share / "rules"))


def command(values: dict[str, str], config: Path = CONFIG) -> list[str]:
    argv = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={DATA}",
            f"--storage.tsdb.retention.time={values['FL_PROMETHEUS_RETENTION']}",
            f"--web.listen-address=:{LISTEN_PORT}",
            # the federation overview (consoles/federation.html) and its library;
            # Debian's own folders are empty
            f"--web.console.templates={SHARE / 'consoles'}",
            f"--web.console.libraries={SHARE / 'console_libraries'}"]
    if values["FL_PROMETHEUS_RETENTION_SIZE"]:
        argv.append(f"--storage.tsdb.retention.size={values['FL_PROMETHEUS_RETENTION_SIZE']}")
    if values["FL_PROMETHEUS_EXTERNAL_URL"]:
        argv.append(f"--web.external-url={values['FL_PROMETHEUS_EXTERNAL_URL']}")
    return argv


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/-/ready", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"prometheus healthcheck: {exc}", file=sys.stderr)
        return 1


def prepare() -> dict[str, str]:
    values = settings(dict(os.environ))
    fed = load_federation()
    if not (TLS / "ca.crt").is_file():
        fail(f"{TLS / 'ca.crt'} is missing (it verifies ctlgate's metrics endpoint); run: invoke ca.deploy")
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render_config(fed, values))
    proc = subprocess.run(["promtool", "check", "config", str(CONFIG)], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"the rendered {CONFIG} does not pass promtool:\n{proc.stdout}{proc.stderr}")
    return values


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    values = prepare()
    if args[:1] == ["check"]:
        print(CONFIG.read_text())
        sys.exit(0)
    if not os.access(DATA, os.W_OK):
        fail(f"{DATA} is not writable by uid {os.getuid()}: mount the prometheus-data volume there")
    print(f"prometheus entrypoint: {CONFIG} rendered ({len(load_federation()['hostnames'])} public hosts "
          f"probed); retention {values['FL_PROMETHEUS_RETENTION']}; starting", flush=True)
    argv = command(values)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
