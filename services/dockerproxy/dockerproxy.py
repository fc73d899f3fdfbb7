#!/usr/bin/env python3
"""A filtering Docker API proxy: JupyterHub's DockerSpawner talks to it instead of the
engine's socket, and it lets through only what spawning a notebook server needs
(README.md lists the rules). Every refusal is a 403 whose message, and a log line,
names the rule. Standard library only.

The rules are pure functions (``decide``) of the request and of a lookup of a
container's name, so each is unit-tested without an engine (tests/).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

VERSION_RE = re.compile(r"^/v[0-9]+\.[0-9]+(/.*)$")
CONTAINER_RE = re.compile(r"^/containers/([^/]+)(/(json|start|stop|wait))?$")
IMAGE_RE = re.compile(r"^/images/(.+)/json$")
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_BODY = 1 << 20
# Create-body keys of HostConfig that must be absent, empty or false (any value
# other than those is refused, naming the key).
FORBIDDEN_HOST_CONFIG = ("Privileged", "CapAdd", "Devices", "DeviceCgroupRules", "VolumesFrom",
                         "Links", "PortBindings", "PublishAllPorts", "Sysctls", "CgroupParent",
                         "ExtraHosts", "Dns", "Runtime", "UsernsMode", "UTSMode", "Cgroup",
                         "GroupAdd", "OomKillDisable")
HOST_NAMESPACES = ("PidMode", "IpcMode")


@dataclass(frozen=True)
class Policy:
    prefix: str                       # container and volume names start with prefix + "-"
    images: tuple[str, ...]           # the only images a container may be created from
    network: str                      # the only network a container may join
    gpu: bool = False                 # GPU device requests allowed (the GPU profile)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Policy":
        missing = [k for k in ("FL_NOTEBOOK_PREFIX", "FL_NOTEBOOK_IMAGES", "FL_NOTEBOOK_NETWORK")
                   if not env.get(k, "").strip()]
        if missing:
            raise SystemExit(f"dockerproxy: configuration error: {', '.join(missing)} not set "
                             "(docker-compose.yml passes them)")
        prefix = env["FL_NOTEBOOK_PREFIX"].strip()
        if not prefix.startswith("jupyter-"):
            raise SystemExit(f"dockerproxy: configuration error: FL_NOTEBOOK_PREFIX={prefix!r} "
                             "must start with 'jupyter-'")
        return cls(prefix=prefix,
                   images=tuple(i.strip() for i in env["FL_NOTEBOOK_IMAGES"].split(",") if i.strip()),
                   network=env["FL_NOTEBOOK_NETWORK"].strip(),
                   gpu=env.get("FL_NOTEBOOK_GPU", "") in ("1", "true", "yes"))


@dataclass
class Decision:
    allowed: bool
    rule: str = ""
    detail: str = ""
    # for an allowed create: the container name it creates
    extra: dict = field(default_factory=dict)


def allow() -> Decision:
    return Decision(True)


def refuse(rule: str, detail: str) -> Decision:
    return Decision(False, rule, detail)


def strip_version(path: str) -> str:
    m = VERSION_RE.match(path)
    return m.group(1) if m else path


def check_create(policy: Policy, query: dict[str, list[str]], body: bytes) -> Decision:
    name = (query.get("name") or [""])[0]
    if not name.startswith(policy.prefix + "-"):
        return refuse("container-name", f"container name {name!r} does not start with {policy.prefix}-")
    try:
        spec = json.loads(body or b"{}")
    except json.JSONDecodeError:
        return refuse("create-body", "the create body is not JSON")
    if not isinstance(spec, dict):
        return refuse("create-body", "the create body is not a JSON object")
    image = spec.get("Image")
    if image not in policy.images:
        return refuse("image", f"image {image!r} is not on the allow-list ({', '.join(policy.images)})")
    host = spec.get("HostConfig") or {}
    if not isinstance(host, dict):
        return refuse("create-body", "HostConfig is not an object")
    for key in FORBIDDEN_HOST_CONFIG:
        if host.get(key):
            rule = {"Privileged": "privileged", "CapAdd": "capabilities", "Devices": "devices",
                    "DeviceCgroupRules": "devices"}.get(key, "host-config")
            return refuse(rule, f"HostConfig.{key} is not allowed ({host.get(key)!r})")
    for key in HOST_NAMESPACES:
        if host.get(key) not in (None, "", "private"):
            return refuse("host-namespace", f"HostConfig.{key}={host.get(key)!r}: only the container's own")
    requests = host.get("DeviceRequests") or []
    if requests:
        gpu_only = all(isinstance(r, dict) and "gpu" in [c for caps in (r.get("Capabilities") or [])
                                                          for c in caps] for r in requests)
        if not (policy.gpu and gpu_only):
            return refuse("devices", "device requests are allowed only for GPUs, in the GPU profile")
    opts = host.get("SecurityOpt") or []
    bad_opts = [o for o in opts if o not in ("no-new-privileges:true", "no-new-privileges")]
    if bad_opts:
        return refuse("security-opt", f"HostConfig.SecurityOpt {bad_opts} is not allowed")
    mode = host.get("NetworkMode")
    if mode != policy.network:
        return refuse("network", f"network {mode!r} is not the notebooks network {policy.network!r}")
    endpoints = ((spec.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    others = [n for n in endpoints if n != policy.network]
    if others:
        return refuse("network", f"networks {others} are not the notebooks network {policy.network!r}")
    for bind in host.get("Binds") or []:
        source = str(bind).split(":", 1)[0]
        if not VOLUME_NAME_RE.match(source):
            return refuse("bind-mount", f"bind mount {bind!r}: only named volumes")
        if not source.startswith(policy.prefix + "-"):
            return refuse("volume-name", f"volume {source!r} does not start with {policy.prefix}-")
    for mount in host.get("Mounts") or []:
        if not isinstance(mount, dict) or mount.get("Type") not in ("volume", "tmpfs"):
            return refuse("bind-mount", f"mount {mount!r}: only named volumes and tmpfs")
        source = mount.get("Source") or ""
        if mount.get("Type") == "volume" and not (VOLUME_NAME_RE.match(source)
                                                   and source.startswith(policy.prefix + "-")):
            return refuse("volume-name", f"volume {source!r} does not start with {policy.prefix}-")
        if (mount.get("VolumeOptions") or {}).get("DriverConfig"):
            return refuse("bind-mount", "volume driver options are not allowed")
    if spec.get("User") in ("0", "root", "0:0"):
        return refuse("root", "containers may not run as root")
    return Decision(True, extra={"name": name})


def decide(policy: Policy, method: str, raw_path: str, body: bytes,
           container_name: Callable[[str], str | None]) -> Decision:
    """Allow or refuse one Docker API request. container_name(ref) answers the name of an
    existing container ("/jupyter-...") or None."""
    url = urlsplit(raw_path)
    path = strip_version(unquote(url.path))
    query = parse_qs(url.query)
    if path == "/_ping" and method in ("GET", "HEAD"):
        return allow()
    if path == "/version" and method == "GET":
        return allow()
    m = IMAGE_RE.match(path)
    if m and method == "GET":
        if m.group(1) in policy.images:
            return allow()
        return refuse("image", f"image {m.group(1)!r} is not on the allow-list")
    if path == "/containers/create" and method == "POST":
        return check_create(policy, query, body)
    m = CONTAINER_RE.match(path)
    if m:
        action = m.group(3) or ""
        allowed = {("GET", "json"), ("POST", "start"), ("POST", "stop"), ("POST", "wait"), ("DELETE", "")}
        if (method, action) not in allowed:
            return refuse("endpoint", f"{method} {path} is not a call the spawner makes")
        name = container_name(m.group(1))
        if name is None:
            return allow()      # the engine answers 404 itself
        if not name.lstrip("/").startswith(policy.prefix + "-"):
            return refuse("container-name", f"container {name.lstrip('/')!r} is not a notebook server "
                                            f"({policy.prefix}-*)")
        if method == "POST" and action == "start" and body not in (b"", b"{}", b"null"):
            return refuse("start-body", "a start with a host configuration is not allowed")
        return allow()
    return refuse("endpoint", f"{method} {path} is not a call the spawner makes")


# ------------------------------------------------------------------------ the server
class UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Proxy(BaseHTTPRequestHandler):
    policy: Policy
    socket_path = "/var/run/docker.sock"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):   # the access log: one line per request
        print(f"dockerproxy: {self.client_address[0]} {fmt % args}", flush=True)

    def engine(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = UnixConnection(self.socket_path)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def container_name(self, ref: str) -> str | None:
        status, _, data = self.engine("GET", f"/containers/{ref}/json")
        if status != 200:
            return None
        return json.loads(data).get("Name", "")

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.answer(413, {"message": "dockerproxy: request body too large"})
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.answer(411, {"message": "dockerproxy: chunked request bodies are not accepted"})
        decision = decide(self.policy, self.command, self.path, body, self.container_name)
        if not decision.allowed:
            print(f"dockerproxy: REFUSED rule={decision.rule} {self.command} {self.path}: {decision.detail}",
                  file=sys.stderr, flush=True)
            return self.answer(403, {"message": f"dockerproxy refused ({decision.rule}): {decision.detail}"})
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("content-type", "content-length", "accept")}
        try:
            status, resp_headers, data = self.engine(self.command, self.path, body, headers)
        except OSError as exc:
            return self.answer(502, {"message": f"dockerproxy: the engine is unreachable: {exc}"})
        self.send_response(status)
        for key, value in resp_headers:
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def answer(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = handle_any


def healthcheck(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
    try:
        conn.request("GET", "/_ping")
        return 0 if conn.getresponse().status == 200 else 1
    except OSError as exc:
        print(f"dockerproxy healthcheck: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> None:
    port = int(os.environ.get("FL_DOCKERPROXY_PORT", "2375"))
    if argv[:1] == ["healthcheck"]:
        sys.exit(healthcheck(port))
    policy = Policy.from_env(dict(os.environ))
    Proxy.policy = policy
    Proxy.socket_path = os.environ.get("FL_DOCKER_SOCKET", "/var/run/docker.sock")
    if not os.access(Proxy.socket_path, os.R_OK | os.W_OK):
        raise SystemExit(f"dockerproxy: configuration error: {Proxy.socket_path} is not readable and "
                         f"writable as uid {os.getuid()} groups {os.getgroups()} "
                         "(FL_DOCKER_GID must be the socket's group; the tasks set it)")
    print(f"dockerproxy: listening on :{port}; containers {policy.prefix}-*, images "
          f"{', '.join(policy.images)}, network {policy.network}, gpu={policy.gpu}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Proxy).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
