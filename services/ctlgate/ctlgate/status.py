"""``GET /status``: up/down of the platform's services for the landing page.

Each service has one or more targets (``tcp://``, ``http(s)://``, ``grpc://``); the
first target that answers makes the service "up". Probes run in parallel with a short
timeout and the whole answer is cached for a few seconds, so a landing page polled
by many browsers costs the services one probe round per TTL.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("ctlgate.status")


def _host_port(url: str, default_port: int | None = None) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    port = parts.port or default_port
    if port is None:
        raise ValueError(f"{url}: no port")
    return parts.hostname, port


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "name not resolvable"
    if isinstance(exc, (TimeoutError, socket.timeout, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {exc.verify_message}"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        return _reason(cause) if cause is not None else "connect error"
    return type(exc).__name__


def probe_tcp(url: str, timeout: float) -> tuple[bool, str]:
    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"tcp {host}:{port} open"
    except OSError as exc:
        return False, f"tcp {host}:{port}: {_reason(exc)}"


def probe_http(url: str, timeout: float, ssl_context: ssl.SSLContext | bool) -> tuple[bool, str]:
    try:
        with httpx.Client(verify=ssl_context, timeout=timeout, follow_redirects=False) as client:
            response = client.get(url)
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return False, f"GET {url}: {_reason(exc)}"
    up = 200 <= response.status_code < 400
    return up, f"GET {url}: HTTP {response.status_code}"


def probe_grpc(url: str, timeout: float) -> tuple[bool, str]:
    """grpc.health.v1 Check on a plain-text channel (the SuperLink health server)."""
    import grpc  # noqa: PLC0415 -- only needed when configured
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    host, port = _host_port(url)
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, f"grpc health {host}:{port}: {status}"
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "error"
        return False, f"grpc health {host}:{port}: {code}"
    finally:
        channel.close()


class StatusProber:
    """Probes the configured services; caches the JSON-able answer ``ttl`` seconds."""

    def __init__(
        self,
        probes: dict[str, list[str]],
        *,
        timeout: float = 1.5,
        ttl: float = 5.0,
        ssl_context: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._probes = probes
        self._timeout = timeout
        self._ttl = ttl
        self._ssl = ssl_context
        self._clock = clock
        self._on_result = on_result or (lambda name, up: None)
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._last: dict[str, bool] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(probes)), thread_name_prefix="probe")

    def probe_target(self, url: str) -> tuple[bool, str]:
        scheme = url.partition("://")[0]
        try:
            if scheme == "tcp":
                return probe_tcp(url, self._timeout)
            if scheme in ("http", "https"):
                return probe_http(url, self._timeout, self._ssl if scheme == "https" else False)
            if scheme == "grpc":
                return probe_grpc(url, self._timeout)
        except Exception as exc:  # noqa: BLE001 -- a probe never breaks /status
            return False, f"{url}: {type(exc).__name__}"
        return False, f"{url}: unsupported scheme"

    def probe_service(self, name: str, targets: list[str]) -> dict[str, Any]:
        start = time.monotonic()
        details = []
        up = False
        for url in targets:
            up, detail = self.probe_target(url)
            details.append(detail)
            if up:
                break
        self._on_result(name, up)
        if self._last.get(name) != up:   # the details go to the log, on changes only
            self._last[name] = up
            log.info("status %s: %s (%s)", name, "up" if up else "down", "; ".join(details))
        return {
            "up": up,
            "state": "up" if up else "down",
            "detail": details[-1] if up else "; ".join(details),
            "latency_ms": round((time.monotonic() - start) * 1000),
        }

    def status(self) -> dict[str, Any]:
        with self._lock:  # one probe round at a time; others wait and reuse it
            now = self._clock()
            if self._cached is not None and now - self._cached_at < self._ttl:
                return self._cached
            futures = {
                name: self._pool.submit(self.probe_service, name, targets)
                for name, targets in self._probes.items()
            }
            services = {name: future.result() for name, future in futures.items()}
            self._cached = {
                "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "all_up": all(s["up"] for s in services.values()),
                "services": services,
            }
            self._cached_at = self._clock()
            return self._cached

    def public_status(self) -> dict[str, Any]:
        """What the public landing page may show: each service's state, nothing about
        internal hostnames, ports or error texts (those are in the log and metrics)."""
        full = self.status()
        return {
            "checked_at": full["checked_at"],
            "all_up": full["all_up"],
            "services": {name: {"state": s["state"]} for name, s in full["services"].items()},
        }
