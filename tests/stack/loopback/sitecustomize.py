"""Resolve the platform's public hostnames (*.<FL_TEST_DOMAIN>) to 127.0.0.1, as
browsers do for *.localhost (RFC 6761), without editing /etc/hosts. Loaded by the
tests' own process and by the CLI subprocesses they start (PYTHONPATH)."""
import os
import socket

_domain = os.environ.get("FL_TEST_DOMAIN", "fl.localhost").lower()
_real = socket.getaddrinfo


def _getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and (name.lower() == _domain or name.lower().endswith("." + _domain)):
        host = "127.0.0.1"
    return _real(host, port, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
