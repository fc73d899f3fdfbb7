#!/usr/bin/env python3
"""Alertmanager entrypoint: validate, render alertmanager.yml (routes by severity, webhook
receivers from the settings), check it with amtool, then exec Alertmanager as its user.

  entrypoint.py              render, check, exec prometheus-alertmanager
  entrypoint.py check        render and check, print the configuration, exit
  entrypoint.py healthcheck  ask the running server's /-/ready

Settings (environment, all optional):
  FL_ALERT_WEBHOOK_URL             comma-separated webhook URLs for every alert
  FL_ALERT_WEBHOOK_URL_<SEVERITY>  the same for one severity (CRITICAL, WARNING, INFO)
  FL_ALERT_GROUP_WAIT, FL_ALERT_GROUP_INTERVAL, FL_ALERT_REPEAT_INTERVAL  durations
  FL_ALERTMANAGER_EXTERNAL_URL     the URL people reach it at (links in notifications)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

SHARE = Path(os.environ.get("FL_TEMPLATES", "/usr/local/share/fl-alertmanager"))
CONFIG = Path(os.environ.get("FL_ALERTMANAGER_CONFIG", "/tmp/alertmanager/alertmanager.yml"))
DATA = Path("/alertmanager")
LISTEN_PORT = 9093
# The severities the alert rules use (services/prometheus/rules/alerts.yml).
SEVERITIES = ("critical", "warning", "info")
DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
TIMINGS = {"FL_ALERT_GROUP_WAIT": "30s", "FL_ALERT_GROUP_INTERVAL": "5m", "FL_ALERT_REPEAT_INTERVAL": "4h"}


def fail(message: str) -> None:
    print(f"alertmanager entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def urls(key: str, value: str) -> list[str]:
    out = []
    for url in filter(None, (u.strip() for u in value.split(","))):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            fail(f"{key}: {url!r} is not an http(s) URL")
        out.append(url)
    return out


def settings(env: dict[str, str]) -> dict:
    timings = {}
    for key, default in TIMINGS.items():
        value = (env.get(key) or "").strip() or default
        if not DURATION_RE.match(value):
            fail(f"{key}={value!r} is not a duration (e.g. 30s, 5m)")
        timings[key] = value
    webhooks = {"default": urls("FL_ALERT_WEBHOOK_URL", env.get("FL_ALERT_WEBHOOK_URL", ""))}
    for severity in SEVERITIES:
        key = f"FL_ALERT_WEBHOOK_URL_{severity.upper()}"
        webhooks[severity] = urls(key, env.get(key, "")) or webhooks["default"]
    external = (env.get("FL_ALERTMANAGER_EXTERNAL_URL") or "").strip()
    if external:
        urls("FL_ALERTMANAGER_EXTERNAL_URL", external)
    return {"timings": timings, "webhooks": webhooks, "external_url": external}


def render_config(values: dict, share: Path = SHARE) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(share)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    t = values["timings"]
    return env.get_template("alertmanager.yml.j2").render(
        severities=SEVERITIES, webhooks=values["webhooks"], group_wait=t["FL_ALERT_GROUP_WAIT"],
        group_interval=t["FL_ALERT_GROUP_INTERVAL"], repeat_interval=t["FL_ALERT_REPEAT_INTERVAL"])


def command(values: dict, config: Path = CONFIG) -> list[str]:
    # One instance: no gossip cluster (an empty listen address turns it off).
    argv = ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={DATA}",
            f"--web.listen-address=:{LISTEN_PORT}", "--cluster.listen-address="]
    if values["external_url"]:
        argv.append(f"--web.external-url={values['external_url']}")
    return argv


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/-/ready", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"alertmanager healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    values = settings(dict(os.environ))
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render_config(values))
    proc = subprocess.run(["amtool", "check-config", str(CONFIG)], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"the rendered {CONFIG} does not pass amtool:\n{proc.stdout}{proc.stderr}")
    if args[:1] == ["check"]:
        print(CONFIG.read_text())
        sys.exit(0)
    if not os.access(DATA, os.W_OK):
        fail(f"{DATA} is not writable by uid {os.getuid()}: mount the alertmanager-data volume there")
    receivers = sum(len(v) for v in values["webhooks"].values())
    print(f"alertmanager entrypoint: {CONFIG} rendered ({receivers} webhook routes); starting", flush=True)
    argv = command(values)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
