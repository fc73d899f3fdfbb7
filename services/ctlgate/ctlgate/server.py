"""The HTTPS server (stdlib ThreadingHTTPServer with its certificate from the project
CA; the TLS handshake runs in each connection's own thread).

Routes:
  GET  /auth                             NGINX auth_request: 200 / 401 / 403
  POST /v1/control/get-login-details     flwr login: start Keycloak device flow
  POST /v1/control/get-auth-tokens       flwr login: poll for the tokens
  POST /v1/control/refresh-auth-tokens   flwr *: refresh after a 401
  GET  /forbidden                        optional NGINX error_page 403 target (JSON body)
  GET  /status                           JSON up/down of the platform's services (state only)
  GET  /healthz                          liveness of this process
  GET  /metrics                          Prometheus metrics
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    disable_created_metrics,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from . import __version__, methods, oidc
from .config import Config
from .control import LOGIN_PATHS, HttpResult, LoginEndpoints, error_result
from .status import StatusProber
from .tokens import JWKS_UNAVAILABLE, Decision, JwksCache, JwksUnavailable, evaluate_token
from .tokens import fetch_json, parse_bearer, token_kid

log = logging.getLogger("ctlgate")


class Metrics:
    """Prometheus metrics on a private registry (several apps can coexist in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.auth_decisions = Counter(
            "ctlgate_auth_decisions_total",
            "auth_request decisions for the Control API, by decision and reason",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.auth_seconds = Histogram(
            "ctlgate_auth_duration_seconds",
            "Time to decide one auth_request",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.login_requests = Counter(
            "ctlgate_login_requests_total",
            "Requests to the Control API login endpoints, by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.jwks_fetches = Counter(
            "ctlgate_jwks_fetches_total",
            "Fetches of the realm's JWKS, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.service_up = Gauge(
            "ctlgate_service_up",
            "Last /status probe result per platform service (1 up, 0 down)",
            ["service"],
            registry=self.registry,
        )
        self.auth_decisions.labels("allow", "ok")  # present from the first scrape


class Gateway:
    """Wires configuration, Keycloak client, JWKS cache, probes and metrics."""

    def __init__(
        self,
        config: Config,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.clock = clock
        self.ssl_context = make_ssl_context(config.ca_file)
        self.http = http or httpx.Client(
            verify=self.ssl_context,
            timeout=config.http_timeout,
            follow_redirects=False,
            headers={"user-agent": f"ctlgate/{__version__}"},
        )
        self.jwks = JwksCache(
            lambda: fetch_json(self.http, config.jwks_url),
            ttl=config.jwks_ttl,
            min_refresh=config.jwks_min_refresh,
            on_fetch=lambda outcome: self.metrics.jwks_fetches.labels(outcome).inc(),
        )
        self.idp = oidc.KeycloakClient(
            self.http,
            device_url=config.device_url,
            token_url=config.token_url,
            client_id=config.cli_client_id,
            scope=config.device_scope,
        )
        self.login = LoginEndpoints(self.idp, self.verify, role=config.role)
        self.prober = StatusProber(
            config.probes,
            timeout=config.probe_timeout,
            ttl=config.status_ttl,
            ssl_context=self.ssl_context,
            on_result=lambda name, up: self.metrics.service_up.labels(name).set(1 if up else 0),
        )

    def any_role(self) -> tuple[str, ...]:
        """The roles that may use the Control API at all (the login calls accept both)."""
        return (self.config.role, self.config.read_role) if self.config.read_role else (self.config.role,)

    def verify(self, token: str | None, roles: tuple[str, ...] | None = None) -> Decision:
        """Evaluate a token (one of ``roles`` required, by default any Control API
        role); 503 when no JWKS can be had (fail closed)."""
        kid = token_kid(token) if token else None
        jwks = None
        if kid is not None:  # no kid: malformed or unknown key, no JWKS needed
            try:
                jwks = self.jwks.get(kid)
            except JwksUnavailable:
                return Decision(503, JWKS_UNAVAILABLE)
        return evaluate_token(
            token,
            jwks,
            self.config.issuer,
            self.config.audience,
            roles or self.any_role(),
            self.clock(),
            leeway=self.config.leeway,
            rfc6750_errors=self.config.rfc6750_errors,
        )

    def authorize(self, authorization: str | None, original_uri: str | None = None) -> Decision:
        """auth_request's decision for one Control API call: the method's roles
        (ctlgate/methods.py) decide; without the URI only the full role passes."""
        start = time.perf_counter()
        roles = methods.roles_for(original_uri, self.config.role, self.config.read_role)
        decision = self.verify(parse_bearer(authorization), roles)
        self.metrics.auth_seconds.observe(time.perf_counter() - start)
        self.metrics.auth_decisions.labels(
            "allow" if decision.allowed else "deny", decision.reason
        ).inc()
        return decision


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify Keycloak (and https probes) against the project CA, else system roots."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Handler(BaseHTTPRequestHandler):
    """One request; ``self.server.gateway`` holds the shared state."""

    protocol_version = "HTTP/1.1"  # keep-alive with NGINX upstream keepalive
    timeout = 120  # seconds an idle kept-alive connection may hold its thread
    server_version = "ctlgate"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._body_done = False

    def handle_one_request(self) -> None:
        self._body_done = False
        super().handle_one_request()

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway  # type: ignore[attr-defined]

    # -- plumbing ----------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._discard_body()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _send_result(self, result: HttpResult) -> None:
        self._send(result.status, result.body, result.content_type, result.headers)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None (and the connection closes) if unusable."""
        self._body_done = True
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # the flwr client always sends Content-Length
            return None
        try:
            size = int(length or 0)
        except ValueError:
            self.close_connection = True
            return None
        if size < 0 or size > limit:
            self.close_connection = True
            return None
        return self.rfile.read(size) if size else b""

    def _discard_body(self) -> None:
        """Consume an unread body so that a kept-alive connection stays in sync."""
        if getattr(self, "_body_done", False):
            return
        self._read_body(64 * 1024)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        if path == "/auth":
            self._auth()
        elif path == "/healthz":
            self._send_json(200, {"status": "ok", "version": __version__})
        elif path == "/status":
            self._send_json(200, self.gateway.prober.public_status(), [("Cache-Control", "no-store")])
        elif path == "/metrics":
            self._send(200, generate_latest(self.gateway.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/forbidden":
            self._forbidden()
        elif path in LOGIN_PATHS:
            self._send_json(405, {"code": 405, "detail": "Use POST."}, [("Allow", "POST")])
        else:
            self._send_json(404, {"code": 404, "detail": "Not found."})

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        if path == "/auth":
            # NGINX may forward the client's method to the auth subrequest.
            self._auth()
            return
        if path == "/forbidden":
            self._forbidden()
            return
        if path not in LOGIN_PATHS:
            self._send_json(404, {"code": 404, "detail": "Not found."})
            return
        body = self._read_body(64 * 1024)
        if body is None:
            result = error_result(413, 1003, "Request body missing, chunked or too large.", "bad_request")
        else:
            result = self.gateway.login.handle(path, self.headers.get("Content-Type"), body)
        endpoint = path.rsplit("/", 1)[-1]
        self.gateway.metrics.login_requests.labels(endpoint, result.outcome).inc()
        log.info(
            "%s %s -> %d %s (client %s)",
            self.command, path, result.status, result.outcome, self._client_ip(),
        )
        self._send_result(result)

    # Any other method on /auth (PUT, DELETE from the original request) is decided too.
    def do_PUT(self) -> None:  # noqa: N802
        self._other_method()

    def do_DELETE(self) -> None:  # noqa: N802
        self._other_method()

    def do_PATCH(self) -> None:  # noqa: N802
        self._other_method()

    def _other_method(self) -> None:
        if self._path() == "/auth":
            self._auth()
        else:
            self._send_json(405, {"code": 405, "detail": "Method not allowed."})

    def _client_ip(self) -> str:
        return self.headers.get("X-Real-IP") or self.headers.get("X-Forwarded-For") or self.client_address[0]

    def _auth(self) -> None:
        original = self.headers.get("X-Original-URI", "?")
        decision = self.gateway.authorize(self.headers.get("Authorization"), original)
        headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
        if decision.www_authenticate:
            headers.append(("WWW-Authenticate", decision.www_authenticate))
        if decision.username:
            headers.append(("X-Ctlgate-User", decision.username))
        headers.append(("X-Ctlgate-Reason", decision.reason))
        # Every decision at INFO: the audit trail of who called which Control API method.
        log.info(
            "auth %s %s user=%s -> %d %s (client %s)",
            self.headers.get("X-Original-Method", "-"),
            original,
            decision.username or "-",
            decision.status,
            decision.reason,
            self._client_ip(),
        )
        self._send_json(decision.status, {"status": decision.status, "reason": decision.reason}, headers)

    def _forbidden(self) -> None:
        role = self.gateway.config.role
        result = error_result(
            403,
            9,  # ApiErrorCode.NO_PERMISSIONS
            f"Your account has no '{role}' realm role: it may not use the SuperLink "
            "Control API. Ask an administrator for access.",
            "forbidden",
        )
        self._send_result(result)


def make_server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    handshake_timeout = 10.0

    def __init__(self, address: tuple[str, int], gateway: Gateway,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(address, Handler)
        self.gateway = gateway
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake, then the requests."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(self.handshake_timeout)
            tls_socket = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            try:
                tls_socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls_socket.close()


def serve(config: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # httpx logs every request (including Keycloak URLs) at INFO: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    disable_created_metrics()  # no *_created series: less noise in Prometheus
    gateway = Gateway(config)
    tls = make_server_tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None
    server = Server((config.listen_host, config.listen_port), gateway, tls)

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "ctlgate %s listening on %s://%s:%d; issuer %s, audience %s, role %s, JWKS %s",
        __version__, "https" if tls else "http", config.listen_host, config.listen_port, config.issuer,
        config.audience, config.role, config.jwks_url,
    )
    # Warm the JWKS cache in the background; /auth fetches on demand anyway.
    threading.Thread(target=_warm_jwks, args=(gateway,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def _warm_jwks(gateway: Gateway) -> None:
    try:
        gateway.jwks.get()
    except JwksUnavailable:
        log.warning("JWKS not available yet (%s); will retry on demand", gateway.config.jwks_url)


def main() -> None:
    serve(Config.from_env())


if __name__ == "__main__":
    main()
