#!/usr/bin/env python3
"""Blackbox exporter entrypoint: render blackbox.yml (the edge_https module, trusting the
project CA), check it, then exec Debian's prometheus-blackbox-exporter. What to probe is
Prometheus' side (job edge: every public hostname of the federation).

  entrypoint.py              render, check, exec prometheus-blackbox-exporter
  entrypoint.py healthcheck  ask the running exporter's landing page
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHARE = Path(os.environ.get("FL_TEMPLATES", "/usr/local/share/fl-blackbox"))
TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
CONFIG = Path(os.environ.get("FL_BLACKBOX_CONFIG", "/tmp/blackbox/blackbox.yml"))
LISTEN_PORT = 9115
# Any HTTP answer is the edge's answer: the alert rules judge the status.
ANY_STATUS = list(range(100, 600))


def fail(message: str) -> None:
    print(f"blackbox-exporter entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def render_config(share: Path = SHARE, tls: Path = TLS) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(share)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("blackbox.yml.j2").render(ca_file=str(tls / "ca.crt"), any_status=ANY_STATUS)


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"blackbox-exporter healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    if not (TLS / "ca.crt").is_file():
        fail(f"{TLS / 'ca.crt'} is missing (it verifies the edge's certificates); run: invoke ca.deploy")
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render_config())
    argv = ["prometheus-blackbox-exporter", f"--config.file={CONFIG}", f"--web.listen-address=:{LISTEN_PORT}"]
    proc = subprocess.run(argv + ["--config.check"], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"the rendered {CONFIG} does not pass --config.check:\n{proc.stdout}{proc.stderr}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
