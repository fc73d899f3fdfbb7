#!/usr/bin/env python3
"""Node exporter entrypoint: check the host's file systems are mounted, then exec Debian's
prometheus-node-exporter on them (read-only).

  entrypoint.py              check, exec prometheus-node-exporter
  entrypoint.py healthcheck  ask the running exporter's landing page
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HOST = Path(os.environ.get("FL_HOST_ROOT", "/host"))
LISTEN_PORT = 9100


def fail(message: str) -> None:
    print(f"node-exporter entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def command(host: Path = HOST) -> list[str]:
    # systemd (no D-Bus here) and textfile (no collector files) would only log errors.
    return ["prometheus-node-exporter", f"--path.procfs={host / 'proc'}", f"--path.sysfs={host / 'sys'}",
            f"--path.rootfs={host / 'root'}", f"--web.listen-address=:{LISTEN_PORT}",
            "--no-collector.systemd", "--no-collector.textfile",
            # the host's pseudo and container file systems are no disk
            "--collector.filesystem.mount-points-exclude=^/(dev|proc|run|sys|var/lib/docker/.+)($|/)"]


def check(host: Path = HOST) -> None:
    for name, probe in (("proc", "loadavg"), ("sys", "class"), ("root", "")):
        if not (host / name / probe).exists():
            fail(f"{host / name} is not the host's /{'' if name == 'root' else name}: "
                 f"mount it read-only (docker-compose.yml, service node-exporter)")


def healthcheck() -> int:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LISTEN_PORT}/", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"node-exporter healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    check()
    argv = command()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
