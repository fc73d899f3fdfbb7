"""Code in a user's notebook server, run the way JupyterLab runs a cell: the Jupyter
server's REST API starts a kernel, its websocket channel carries execute requests and
their output (Jupyter messaging protocol 5.3, JSON frames), all through the edge
(hub.<domain>/user/<name>/) with a hub API token of the user (`Authorization: token`)."""
from __future__ import annotations

import datetime as dt
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field

import httpx
from websockets.sync.client import connect


@dataclass
class CellResult:
    status: str = ""                              # execute_reply: ok | error | aborted
    stdout: str = ""
    stderr: str = ""
    error: dict = field(default_factory=dict)     # ename, evalue, traceback
    outputs: list[dict] = field(default_factory=list)   # display_data / execute_result bundles

    def __str__(self) -> str:
        text = f"status={self.status}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        if self.error:
            text += f"\n--- error {self.error.get('ename')}: {self.error.get('evalue')}"
        return text

    def last_json(self) -> dict:
        """The last stdout line that is a JSON object (cells print their findings so)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"no JSON line in the cell's output:\n{self}")


class Kernel:
    """A python3 kernel in `server_url` (https://hub.<domain>/user/<name>), used as a
    context manager: started on entry, shut down on exit."""

    def __init__(self, server_url: str, token: str, ca: str, username: str = "test"):
        self.server_url = server_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.ssl = ssl.create_default_context(cafile=ca)
        self.http = httpx.Client(verify=self.ssl, timeout=60, headers=self.headers)
        self.username = username
        self.session = uuid.uuid4().hex
        self.kernel_id = ""
        self.ws = None

    def __enter__(self) -> "Kernel":
        answer = self.http.post(f"{self.server_url}/api/kernels", json={"name": "python3"})
        assert answer.status_code == 201, f"starting a kernel: {answer.status_code} {answer.text[:300]}"
        self.kernel_id = answer.json()["id"]
        ws_url = "wss" + self.server_url[len("https"):] + \
            f"/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        self.ws = connect(ws_url, ssl=self.ssl, additional_headers=self.headers,
                          open_timeout=60, max_size=None, proxy=None)
        # The kernel answers once it is up: kernel_info is JupyterLab's first request too.
        self._request("kernel_info_request", {}, timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
            if self.kernel_id:          # gone already when its server was stopped meanwhile
                self.http.delete(f"{self.server_url}/api/kernels/{self.kernel_id}")
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the test's own result
            print(f"kernel {self.kernel_id}: cleanup: {exc!r}")
        finally:
            self.http.close()

    def _message(self, msg_type: str, content: dict) -> dict:
        return {"header": {"msg_id": uuid.uuid4().hex, "username": self.username, "session": self.session,
                           "msg_type": msg_type, "version": "5.3",
                           "date": dt.datetime.now(dt.timezone.utc).isoformat()},
                "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}

    def _request(self, msg_type: str, content: dict, timeout: float) -> dict:
        msg = self._message(msg_type, content)
        self.ws.send(json.dumps(msg))
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            assert left > 0, f"no answer to {msg_type} within {timeout}s"
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"] \
                    and reply.get("channel") == "shell":
                return reply

    def run(self, code: str, timeout: float = 300) -> CellResult:
        """Execute one cell; returns its output once the kernel is idle again and the
        execute_reply has come."""
        msg = self._message("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        self.ws.send(json.dumps(msg))
        result, idle, replied = CellResult(), False, False
        deadline = time.time() + timeout
        while not (idle and replied):
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"the cell did not finish within {timeout}s; so far:\n{result}")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind, content = reply["header"]["msg_type"], reply["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("display_data", "execute_result"):
                result.outputs.append(content.get("data", {}))
            elif kind == "error":
                result.error = content
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "execute_reply":
                result.status, replied = content["status"], True
        return result
