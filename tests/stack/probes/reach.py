"""Run inside a source's network namespace (a throwaway container joined to it):
probe every target on every address given, print one JSON object {target: result}.

argv[1]: JSON {target: {"addresses": [ip, ...], "port": n, "probe": kind,
                         "host": sni-or-null, "path": "/..."}}
A result is "allowed" (the service answered in its protocol) or "refused: <why>".
Standard library only (Debian's python3 in the probe image)."""
import json
import socket
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 8.0    # above the edge's resolver timeout (5 s): its 502 for a service not deployed


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # reachability, not trust: the other tests check trust
    return ctx


def http_answer(sock, host, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = sock.recv(64)
    if not data.startswith(b"HTTP/"):
        raise ConnectionError("closed without an HTTP answer")
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def probe_one(address, spec):
    kind, port = spec["probe"], spec["port"]
    with socket.create_connection((address, port), timeout=TIMEOUT) as raw:
        raw.settimeout(TIMEOUT)
        if kind == "tcp":
            return "connected"
        if kind == "pg":
            raw.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))   # SSLRequest
            answer = raw.recv(1)
            if answer not in (b"S", b"N"):
                raise ConnectionError("no PostgreSQL answer")
            return f"PostgreSQL answered {answer.decode()}"
        if kind == "http":
            return http_answer(raw, spec.get("host") or address, spec.get("path") or "/")
        with tls_context().wrap_socket(raw, server_hostname=spec.get("host")) as tls:
            if kind == "tls":
                return f"TLS {tls.version()}"
            return http_answer(tls, spec.get("host") or address, spec.get("path") or "/")


def probe(spec):
    if not spec["addresses"]:
        return "refused: no shared network"
    reasons = []
    for address in spec["addresses"]:
        try:
            return f"allowed ({probe_one(address, spec)})"
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            reasons.append(f"{address}: {type(exc).__name__}: {exc}"[:120])
    return "refused: " + "; ".join(reasons)


def main():
    targets = json.loads(sys.argv[1])
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = dict(zip(targets, pool.map(probe, targets.values())))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
