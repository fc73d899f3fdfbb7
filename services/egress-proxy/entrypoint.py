#!/usr/bin/env python3
"""The notebook servers' egress proxy: render squid.conf from the allow-list, check it
with `squid -k parse`, then exec Squid in the foreground.

  entrypoint.py              render, check, exec squid -N
  entrypoint.py check        render and check, print the configuration, exit
  entrypoint.py healthcheck  a request through the running proxy is answered

Setting (environment): FL_NOTEBOOKS_EGRESS, from federation.yaml's notebooks.egress
(rendered into build/federation.env by the tasks), comma-separated:
  (empty)             no destination at all: every request is refused (the default)
  *                   any public destination
  example.org,.ac.uk  these hosts; a leading dot admits the domain's subdomains too
Whatever the list, destinations that resolve to private, loopback, link-local or
shared addresses are refused (the platform's networks and the host are never reached
through here), and CONNECT (HTTPS) only to port 443.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

PORT = 3128
CONFIG = Path(os.environ.get("FL_EGRESS_CONFIG", "/tmp/squid/squid.conf"))
# RFC 1918, RFC 6598 (shared), loopback, link-local, "this network", multicast and
# reserved; IPv6 loopback, unique-local, link-local.
PRIVATE = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
           "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
           "::1", "fc00::/7", "fe80::/10")
DOMAIN_RE = re.compile(r"^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def fail(message: str) -> None:
    print(f"egress-proxy entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def allow_list(value: str) -> list[str]:
    """FL_NOTEBOOKS_EGRESS -> ["*"], [] or the domains, validated."""
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if "*" in items:
        if len(items) > 1:
            fail(f"FL_NOTEBOOKS_EGRESS={value!r}: '*' admits every public destination; list nothing else with it")
        return ["*"]
    for item in items:
        if not DOMAIN_RE.match(item) or "." not in item.lstrip("."):
            fail(f"FL_NOTEBOOKS_EGRESS: {item!r} is not a host name or .domain (e.g. example.org, .example.org)")
    return items


def render(allowed: list[str], port: int = PORT) -> str:
    lines = [
        "# Rendered by entrypoint.py at every start; edits here are overwritten.",
        f"http_port {port}",
        "acl private_dst dst " + " ".join(PRIVATE),
        "acl https_port port 443",
        "acl web_ports port 80 443",
        "acl CONNECT method CONNECT",
        "http_access deny private_dst",
        "http_access deny !web_ports",
        "http_access deny CONNECT !https_port",
    ]
    if allowed == ["*"]:
        lines.append("http_access allow all")
    elif allowed:
        lines += ["acl allowed_dst dstdomain " + " ".join(allowed), "http_access allow allowed_dst"]
    lines += [
        "http_access deny all",
        # a forward proxy only: no cache on disk or in memory, no identifying headers
        "cache deny all",
        "cache_mem 0 MB",
        "via off",
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        # logs to the container's output; state under /tmp (read-only root)
        "acl healthcheck dstdomain healthcheck.invalid",
        "access_log stdio:/dev/stdout !healthcheck",
        "cache_log stdio:/dev/stderr",
        "logfile_rotate 0",
        "pid_filename /tmp/squid/squid.pid",
        "coredump_dir /tmp/squid",
        "netdb_filename none",
        "shutdown_lifetime 2 seconds",
    ]
    return "\n".join(lines) + "\n"


def write_config(value: str) -> Path:
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render(allow_list(value)))
    done = subprocess.run(["squid", "-k", "parse", "-f", str(CONFIG)], capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"squid rejected {CONFIG}:\n{done.stderr[-2000:]}")
    return CONFIG


def healthcheck() -> int:
    """A request for a name that cannot exist: Squid answers it (with an error page)."""
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=3) as s:
            s.sendall(b"GET http://healthcheck.invalid/ HTTP/1.0\r\n\r\n")
            answer = s.recv(64)
    except OSError as exc:
        print(f"egress proxy not answering on {PORT}: {exc}", file=sys.stderr)
        return 1
    return 0 if answer.startswith(b"HTTP/") else 1


def main(argv: list[str]) -> None:
    value = os.environ.get("FL_NOTEBOOKS_EGRESS", "")
    if argv[1:2] == ["healthcheck"]:
        sys.exit(healthcheck())
    config = write_config(value)
    if argv[1:2] == ["check"]:
        print(config.read_text(), end="")
        return
    allowed = allow_list(value)
    print(f"egress-proxy: notebook servers may reach "
          f"{'any public destination' if allowed == ['*'] else ', '.join(allowed) or 'nothing (the default)'}",
          flush=True)
    os.execvp("squid", ["squid", "-N", "-f", str(config)])


if __name__ == "__main__":
    main(sys.argv)
