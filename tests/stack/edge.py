"""Talking to the edge from outside as a client on this machine does: TLS with the
public hostname (resolved to 127.0.0.1 by loopback/sitecustomize.py), verified against
the project CA."""
from __future__ import annotations

import socket
import ssl

import httpx

from fedops import compose


def https_port() -> int:
    return int(compose.settings().get("FL_HTTPS_PORT", "443"))


def tls_context(stack, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def client(stack, cert: tuple[str, str] | None = None, **kw) -> httpx.Client:
    return httpx.Client(verify=tls_context(stack, cert), timeout=30, **kw)


def handshake(host: str, ctx: ssl.SSLContext, port: int | None = None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port or https_port()), timeout=10)
    return ctx.wrap_socket(sock, server_hostname=host)
