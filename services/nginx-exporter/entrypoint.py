#!/usr/bin/env python3
"""NGINX exporter entrypoint: exec Debian's prometheus-nginx-exporter on the edge's
stub_status (its internal listener, answered to the monitoring zone only).

  entrypoint.py              exec prometheus-nginx-exporter
  entrypoint.py healthcheck  ask the running exporter's landing page

FL_NGINX_STATUS_URL: the stub_status URL (default http://nginx:8080/nginx_status).
"""
from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

LISTEN_PORT = 9113
DEFAULT_STATUS_URL = "http://nginx:8080/nginx_status"


def fail(message: str) -> None:
    print(f"nginx-exporter entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def command(env: dict[str, str]) -> list[str]:
    url = (env.get("FL_NGINX_STATUS_URL") or "").strip() or DEFAULT_STATUS_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"FL_NGINX_STATUS_URL={url!r} is not an http(s) URL")
    return ["prometheus-nginx-exporter", f"--nginx.scrape-uri={url}", f"--web.listen-address=:{LISTEN_PORT}"]


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"nginx-exporter healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    argv = command(dict(os.environ))
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
