"""The warm ClientApp launcher: the SuperNode's SuperExec, with each ClientApp forked
from a process that has already imported flwr and the app's libraries.

flwr 1.42's own SuperExec (`flower-superexec`, started by `flower-supernode --isolation
subprocess`) starts every message's ClientApp as a new `flwr-clientapp` process, which
imports flwr's whole package tree again (FastAPI, SQLAlchemy, Alembic, uvicorn through
`flwr.supernode.cli`) and the app's libraries: about 2 CPU-s per message, more than the
sample app's work. This launcher takes its place (`flower-supernode --isolation
process`, the mode in which flwr expects the SuperExec to be run by someone else):

    the container's main process (entrypoint.py)
      starts flower-supernode --isolation process      (a child; its exit ends us)
      imports flwr's `flwr-clientapp` entry point and SUPERNODE_PRELOAD (numpy)
      asks the SuperNode's Runtime API for a task every SUPERNODE_TASK_POLL_INTERVAL s
      (flwr's AcquireTask, as `flower-superexec` does) and, for each, forks a child
      that runs `flwr-clientapp` exactly as the command line would

So every message still runs in its own process (a crash, a leak or a module-level state
of one ClientApp never reaches the next; the app's own modules are imported in the child),
only flwr's and the preloaded libraries' imports are shared, copy-on-write. flwr itself is
not changed: the task loop is flwr's SuperExec loop with flwr's own plugin
(`AutoExecPlugin`) and an executor of ours, which flwr's Executor protocol describes.

Signals: SIGTERM or SIGINT to this process (Docker's stop, the healthcheck's restart
through the init) goes to flower-supernode and the running ClientApps; this process
exits with flower-supernode's exit code, so the container's restart policy applies.

Importing this module has no side effects and no flwr import: ``clientapp_argv``,
``preload_modules``, ``exit_code`` and ``Children`` are tested without Docker.
"""
from __future__ import annotations

import gc
import importlib
import os
import signal
import subprocess
import sys
import time
from typing import Callable

CLIENT_APP = "flwr-clientapp"       # flwr's TaskType.CLIENT_APP (its command name)


def log(message: str) -> None:
    print(f"supernode launcher: {message}", file=sys.stderr, flush=True)


def preload_modules(value: str) -> list[str]:
    """SUPERNODE_PRELOAD: module names separated by spaces or commas (ValueError on a
    name that is not a dotted Python identifier)."""
    names = [n for n in value.replace(",", " ").split() if n]
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"SUPERNODE_PRELOAD item {name!r} is not a module name")
    return names


def clientapp_argv(runtime_api_address: str, token: str, parent_pid: int | None,
                   insecure: bool = True, root_certificates: str | None = None,
                   runtime_dependency_install: bool = False) -> list[str]:
    """The `flwr-clientapp` command line flwr's SubprocessExecutor would run."""
    argv = [CLIENT_APP, "--runtime-api-address", runtime_api_address, "--token", token]
    if insecure:
        argv.append("--insecure")
    elif root_certificates is not None:
        argv += ["--root-certificates", root_certificates]
    if parent_pid is not None:
        argv += ["--parent-pid", str(parent_pid)]
    if runtime_dependency_install:
        argv.append("--allow-runtime-dependency-installation")
    return argv


def exit_code(status: int) -> int:
    """A process's exit code from os.waitpid's status (128+N for a signal N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


class Children:
    """The ClientApps forked and not yet reaped (pid -> task id)."""

    def __init__(self):
        self.tasks: dict[int, int] = {}

    def add(self, pid: int, task_id: int) -> None:
        self.tasks[pid] = task_id

    def reap(self) -> list[tuple[int, int, int]]:
        """(pid, task id, exit code) of each child that has ended; none left a zombie."""
        done = []
        for pid in list(self.tasks):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done.append((pid, self.tasks.pop(pid), 1))
                continue
            if got == pid:
                done.append((pid, self.tasks.pop(pid), exit_code(status)))
        return done

    def signal_all(self, sig: int) -> None:
        for pid in self.tasks:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _run_child(entry: Callable[[], None], argv: list[str]) -> None:
    """In the forked child: become `flwr-clientapp ARGV` and never return."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # the parent's objects stay frozen (gc.freeze): a collection here would write to
        # every one of them and so copy the pages the child shares with the launcher
        sys.argv = argv
        try:
            entry()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class ForkExecutor:
    """flwr's Executor protocol (flwr.supercore.superexec.executor.types): a ClientApp
    task is launched by forking this process, which holds the imports."""

    def __init__(self, entry: Callable[[], None], children: Children, launch_result):
        self.entry, self.children, self.result = entry, children, launch_result

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):
        return {t for t in supported_task_types if str(t) == CLIENT_APP}, set()

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None):
        return None

    def launch(self, spec):
        if str(spec.task_type) != CLIENT_APP:
            return self.result.failed(f"the warm launcher runs only {CLIENT_APP} tasks, not {spec.task_type}")
        argv = clientapp_argv(spec.runtime_api_address, spec.token, spec.parent_pid, spec.insecure,
                              spec.root_certificates_path, spec.runtime_dependency_install)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(self.entry, argv)
        self.children.add(pid, spec.task_id)
        return self.result.accepted()

    def reconcile(self) -> None:
        for pid, task_id, code in self.children.reap():
            if code:
                log(f"ClientApp of task {task_id} (pid {pid}) exited with {code}")

    def close(self) -> None:
        self.children.signal_all(signal.SIGTERM)


def poll_interval(value: str) -> float:
    """SUPERNODE_TASK_POLL_INTERVAL in seconds (flwr's SuperExec polls every 1 s)."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"SUPERNODE_TASK_POLL_INTERVAL={value!r} is not a number of seconds") from None
    if not 0.01 <= seconds <= 60:
        raise ValueError(f"SUPERNODE_TASK_POLL_INTERVAL={value!r} must be between 0.01 and 60 seconds")
    return seconds


def run(supernode_cmd: list[str], runtime_api_address: str, preload: list[str],
        interval: float) -> int:
    """Start flower-supernode and serve its ClientApp tasks until it exits; returns its
    exit code. Only returns; the caller exits with the code."""
    supernode = subprocess.Popen(supernode_cmd)
    children = Children()
    stopping: list[int] = []

    def forward(signum, _frame):
        stopping.append(signum)
        for target in (supernode.pid, *children.tasks):
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    started = time.monotonic()
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # noqa: E402 - the warm imports
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import LaunchResult
    from flwr.supercore.superexec.plugin import AutoExecPlugin
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log(f"SUPERNODE_PRELOAD: {name} not imported ({exc}); its ClientApps import it themselves")
    log(f"flwr{''.join(' + ' + n for n in preload)} imported in {time.monotonic() - started:.1f} s; "
        f"ClientApps are forked from pid {os.getpid()}")

    executor = ForkExecutor(flwr_clientapp, children, LaunchResult)
    plugin = AutoExecPlugin(runtime_api_address=runtime_api_address, insecure=True,
                            root_certificates_path=None, runtime_dependency_install=False,
                            executor=executor)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        # no retry inside a call: the loop below tries again, and sees the SuperNode exit
        retry_invoker=None)
    # what is imported now stays out of the garbage collector's reach: the children's
    # collections do not write to (and so copy) the shared pages
    gc.collect()
    gc.freeze()
    failing_since = None
    try:
        while supernode.poll() is None and not stopping:
            executor.reconcile()
            try:
                types, hashes = executor.get_eligible_capacity(set(plugin.supported_task_types))
                reply = client.AcquireTask(AcquireTaskRequest(supported_task_types=types,
                                                              agentapp_fab_hashes=hashes))
                failing_since = None
            except Exception as exc:  # noqa: BLE001 - the SuperNode starting or restarting
                if failing_since is None:
                    failing_since = time.monotonic()
                elif time.monotonic() - failing_since > 60:
                    log(f"the SuperNode's Runtime API on {runtime_api_address} has not answered "
                        f"for 60 s: {exc}")
                    failing_since = time.monotonic()
                time.sleep(interval)
                continue
            if reply.HasField("task") and reply.token:
                try:
                    result = plugin.launch_task(token=reply.token, task=reply.task)
                except OSError as exc:   # fork refused (the container's pids limit, memory)
                    result = LaunchResult.failed(f"fork failed: {exc}")
                if str(result.status) != "accepted":
                    # flwr's task expiry then fails the message, as with its own SuperExec
                    log(f"task {reply.task.task_id} not launched: {result.message}")
            time.sleep(interval)
    finally:
        if supernode.poll() is None:
            supernode.terminate()
        try:
            code = supernode.wait(timeout=20)
        except subprocess.TimeoutExpired:
            supernode.kill()
            code = supernode.wait()
        executor.close()
        deadline = time.monotonic() + 5
        while children.tasks and time.monotonic() < deadline:
            children.reap()
            time.sleep(0.1)
        client.close()
    if code < 0:
        code = 128 - code
    return code
