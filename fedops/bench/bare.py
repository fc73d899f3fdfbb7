"""Bare Flower on the host: one SuperLink and a SuperNode per online site as plain
processes (insecure, no containers), running the same app as the stack."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .. import federation, paths, runlog
from ..instances import free_ports
from ..errors import FedopsError
from .common import APP, _float, log, sigint_deferred
from .report import Timing
from .stackrun import show_progress


BARE_CONNECTION = "bench"


def superlink_argv(port: int, database: str) -> list[str]:
    """Bare SuperLink: insecure, no node auth, no `uv sync`, on 127.0.0.1:PORT."""
    return ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
            "--database", database, "--host", "127.0.0.1", "--port", str(port)]


def supernode_argv(superlink_port: int, runtime_port: int, partition_id: int,
                   num_partitions: int) -> list[str]:
    """Bare SuperNode with its own ClientAppIo (Runtime API) port."""
    return ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{superlink_port}",
            "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
            "--host", "127.0.0.1", "--port", str(runtime_port)]


def connection_toml(name: str, port: int) -> str:
    """FLWR_HOME/config.toml for the bare SuperLink (insecure)."""
    return (f'[superlink]\ndefault = "{name}"\n\n'
            f'[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')


def flwr_run_argv(app_dir: Path, connection: str, run_config: str) -> list[str]:
    return ["flwr", "run", str(app_dir), connection, "--run-config", run_config, "--format", "json"]


def bare_env(base: dict[str, str], flwr_home: Path, bin_dir: Path) -> dict[str, str]:
    env = dict(base)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"})
    return env


class BareFederation:
    """flower-superlink and N flower-supernode processes on the host, insecure, in a temp
    folder; each in its own process group, all killed on exit (also on errors, Ctrl-C)."""

    def __init__(self, partitions: list[int], num_partitions: int, app_dir: Path = paths.ROOT / "apps" / APP):
        """One SuperNode per partition id (the node config of the organisations' sites)."""
        self.partitions, self.num_partitions = list(partitions), num_partitions
        self.n, self.app_dir = len(self.partitions), app_dir
        self.bin_dir = Path(sys.executable).parent
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}
        self.port = 0

    def preflight(self) -> None:
        import importlib.util
        missing = [exe for exe in ("flower-superlink", "flower-supernode", "flwr")
                   if not (self.bin_dir / exe).exists()]
        missing += [mod for mod in ("sklearn", "numpy") if importlib.util.find_spec(mod) is None]
        if missing:
            raise FedopsError(f"the bare run needs {', '.join(missing)} in the task runner's virtualenv",
                              ".venv/bin/pip install -e '.[test]' (or delete .venv/.installed and run ./invoke)")

    def _spawn(self, argv: list[str], logname: str) -> subprocess.Popen:
        logf = open(Path(self.tmp.name) / logname, "wb")
        try:
            proc = subprocess.Popen(argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.tmp.name)
        finally:
            logf.close()
        self.procs.append(proc)
        return proc

    def log_tail(self, logname: str, lines: int = 15) -> str:
        try:
            text = (Path(self.tmp.name) / logname).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(runlog.strip_ansi(text).splitlines()[-lines:])

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp.name)

    def __enter__(self):
        self.preflight()
        self.tmp = tempfile.TemporaryDirectory(prefix="fedops-bench-")
        home = Path(self.tmp.name) / "flwr-home"
        home.mkdir()
        ports = free_ports(1 + self.n)
        self.port = ports[0]
        (home / "config.toml").write_text(connection_toml(BARE_CONNECTION, self.port))
        self.env = bare_env(os.environ, home, self.bin_dir)
        try:
            self._start(ports[1:])
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, runtime_ports: list[int]) -> None:
        sl = self._spawn(superlink_argv(self.port, str(Path(self.tmp.name) / "state.db")), "superlink.log")
        deadline = time.time() + 90
        while True:   # SuperNodes that find no SuperLink exit: wait for it first
            if sl.poll() is not None:
                raise FedopsError(f"the bare flower-superlink exited ({sl.returncode}):\n{self.log_tail('superlink.log')}",
                                  f"is port {self.port} free? run `{shlex.join(superlink_argv(self.port, ':memory:'))}` by hand")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise FedopsError("the bare flower-superlink did not answer /health within 90 s:\n"
                                  + self.log_tail("superlink.log"), "see the log lines above")
            time.sleep(0.5)
        for i, (rport, pid) in enumerate(zip(runtime_ports, self.partitions)):
            self._spawn(supernode_argv(self.port, rport, pid, self.num_partitions), f"supernode-{i}.log")
        deadline = time.time() + 90
        while True:
            online = self.online()
            if online >= self.n:
                return
            dead = [i for i, p in enumerate(self.procs[1:]) if p.poll() is not None]
            if dead:
                raise FedopsError(f"bare flower-supernode {dead[0]} exited:\n{self.log_tail(f'supernode-{dead[0]}.log')}",
                                  "see the log lines above")
            if time.time() > deadline:
                raise FedopsError(f"only {online} of {self.n} bare SuperNodes came online within 90 s",
                                  "see the SuperNodes' logs")
            time.sleep(1)

    def online(self) -> int:
        proc = self.flwr("supernode", "list", BARE_CONNECTION, "--format", "json")
        try:
            nodes = federation.parse_json(proc.stdout).get("nodes", [])
        except (FedopsError, json.JSONDecodeError):
            return 0
        return sum(n.get("status") == "online" for n in nodes)

    def status(self, run_id: str) -> dict:
        proc = self.flwr("ls", "--run-id", str(run_id), BARE_CONNECTION, "--format", "json")
        runs = federation.parse_json(proc.stdout).get("runs", [])
        if not runs:
            raise FedopsError(f"bare run {run_id} is unknown: {proc.stderr.strip()[-300:]}",
                              "see the bare SuperLink's log")
        return runs[0]

    def time_run(self, rounds: int, timeout: float = 1800) -> Timing:
        t0 = time.monotonic()
        proc = self.flwr(*flwr_run_argv(self.app_dir, BARE_CONNECTION, federation.run_config(rounds))[1:],
                         timeout=300)
        data = federation.parse_json(proc.stdout) if "{" in proc.stdout else {}
        run_id = str(data.get("run-id") or "")
        if proc.returncode != 0 or not data.get("success") or not run_id:
            raise FedopsError(f"flwr run on the bare SuperLink failed: {(proc.stderr or proc.stdout).strip()[-600:]}",
                              "see the bare SuperLink's log")
        log(f"  bare: run {run_id} submitted")
        stats: dict = {}
        row = federation.follow(run_id, show_progress("bare", stats), timeout=timeout,
                                log_argv=[str(self.bin_dir / "flwr"), "log", run_id, BARE_CONNECTION, "--stream"],
                                status=self.status, env=self.env)
        return Timing("bare", time.monotonic() - t0, run_id, row["status"], _float(row.get("elapsed")), self.n,
                      stats.get("failures", 0), stats.get("min_replies"))

    def close(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left after 10 s."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            _signal_group(proc, signal.SIGKILL)   # also the group's children (SuperExec, apps)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        if self.tmp:
            self.tmp.cleanup()
            self.tmp = None

    def __exit__(self, *exc):
        with sigint_deferred():
            self.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)   # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


