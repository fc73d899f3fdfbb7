"""Talking to the edge from outside as a client on this machine does: TLS to 127.0.0.1
with the public hostname as SNI and Host, verified against the project CA."""
from __future__ import annotations

import socket
import ssl

import httpx

from fedops import compose


def https_port() -> int:
    return int(compose.settings().get("FL_HTTPS_PORT", "443"))


def client(stack, cert: tuple[str, str] | None = None, **kw) -> httpx.Client:
    """An httpx client whose connections for *.<domain> go to 127.0.0.1."""
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    if cert:
        ctx.load_cert_chain(*cert)
    transport = httpx.HTTPTransport(verify=ctx, local_address=None)
    port = https_port()

    class Loopback(httpx.HTTPTransport):
        def handle_request(self, request):
            request.extensions = {**request.extensions, "sni_hostname": request.url.host}
            request.headers.setdefault("Host", request.url.host)
            request.url = request.url.copy_with(host="127.0.0.1", port=port)
            return transport.handle_request(request)

    return httpx.Client(transport=Loopback(), timeout=30, **kw)


def handshake(host: str, ctx: ssl.SSLContext, port: int | None = None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port or https_port()), timeout=10)
    return ctx.wrap_socket(sock, server_hostname=host)
