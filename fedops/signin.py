"""A person at the federation's web sign-in, played by an HTTP client: Keycloak's login
form through the edge, and JupyterHub's REST API as that signed-in user. Used by
`invoke bench` (notebook spawn times) and by the stack tests (tests/stack/oidc.py)."""
from __future__ import annotations

import html
import re
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx

from .errors import FedopsError

FORM_RE = re.compile(r'<form[^>]*id="(?P<id>[^"]+)"[^>]*action="(?P<action>[^"]+)"', re.S)
ANY_FORM_RE = re.compile(r'<form[^>]*action="(?P<action>[^"]+)"', re.S)


def form_action(page: str, form_id: str | None = None) -> str:
    """The action URL of the form `form_id` (else of the first form) on an HTML page."""
    for m in FORM_RE.finditer(page):
        if form_id is None or m.group("id") == form_id:
            return html.unescape(m.group("action"))
    m = ANY_FORM_RE.search(page)
    if not m:
        raise FedopsError(f"no form on the page: {page[:300]!r}", "is this Keycloak's sign-in page?")
    return html.unescape(m.group("action"))


def submit_login(http: httpx.Client, page: httpx.Response, username: str, password: str) -> httpx.Response:
    """Fill in and submit Keycloak's login form on `page`; Keycloak's answer (a redirect
    when the password was right, the form again when not)."""
    action = urljoin(str(page.url), form_action(page.text, "kc-form-login"))
    return http.post(action, data={"username": username, "password": password, "credentialId": ""})


_getaddrinfo = socket.getaddrinfo


def _loopback_for_localhost(host, port, *args, **kwargs):
    """Names under .localhost are this machine (RFC 6761), as browsers resolve them;
    glibc does not, and the default domain (fl.localhost) is such a name."""
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.lower().rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, port, *args, **kwargs)


def client(ca: Path, timeout: float = 60) -> httpx.Client:
    socket.getaddrinfo = _loopback_for_localhost
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=timeout)


class HubUser:
    """A user signed in at the hub (its cookies in `http`), driving its own server through
    the hub's REST API as the hub's web page does."""

    def __init__(self, hub_url: str, ca: Path, username: str, http: httpx.Client | None = None):
        """`http`: a client already signed in at the hub (its cookies), else a new one."""
        self.hub, self.username = hub_url.rstrip("/"), username
        self.http = http or client(ca)

    def sign_in(self, password: str) -> HubUser:
        """The hub sends us to Keycloak (PKCE), we submit the form, Keycloak sends us
        back to the hub's callback."""
        start = self.http.get(f"{self.hub}/hub/oauth_login")
        if start.status_code != 302:
            raise FedopsError(f"the hub did not send {self.username} to sign in: HTTP {start.status_code}",
                              "is jupyterhub running? invoke status")
        page = self.http.get(start.headers["location"])
        done = submit_login(self.http, page, self.username, password)
        if done.status_code != 302:
            raise FedopsError(f"Keycloak refused {self.username}'s sign-in (HTTP {done.status_code})",
                              "check the password: invoke secrets.password " + self.username)
        back = self.http.get(done.headers["location"])
        if back.status_code != 302:
            raise FedopsError(f"the hub refused {self.username} after sign-in (HTTP {back.status_code})",
                              "is the user in group jupyter_users?")
        self.http.get(f"{self.hub}/hub/home")          # sets the _xsrf cookie
        return self

    def _headers(self) -> dict:
        token = next((c.value for c in self.http.cookies.jar if c.name == "_xsrf"), "")
        return {"X-XSRFToken": token} if token else {}

    def api(self, method: str, path: str) -> httpx.Response:
        return self.http.request(method, f"{self.hub}/hub/api{path}", headers=self._headers())

    def server(self, username: str | None = None) -> dict | None:
        """The default server of `username` (self by default) as the hub reports it."""
        user = self.api("GET", f"/users/{username or self.username}").json()
        return (user.get("servers") or {}).get("")

    def start(self) -> None:
        answer = self.api("POST", f"/users/{self.username}/server")
        if answer.status_code not in (201, 202, 400):        # 400: already running
            raise FedopsError(f"the hub did not start {self.username}'s server: HTTP {answer.status_code} "
                              f"{answer.text[:200]}", "see: ./invoke logs jupyterhub")

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds until the hub reports the server ready."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            s = self.server()
            if s and s.get("ready"):
                return time.monotonic() - start
            time.sleep(0.5)
        raise FedopsError(f"{self.username}'s server was not ready within {timeout:.0f} s",
                          "see: ./invoke logs jupyterhub")

    def stop(self, timeout: float = 120) -> None:
        answer = self.api("DELETE", f"/users/{self.username}/server")
        if answer.status_code not in (202, 204, 400):
            raise FedopsError(f"the hub did not stop {self.username}'s server: HTTP {answer.status_code}",
                              "see: ./invoke logs jupyterhub")
        start = time.monotonic()
        while self.server() and time.monotonic() - start < timeout:
            time.sleep(1)

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
