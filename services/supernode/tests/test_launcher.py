"""services/supernode/launcher.py, the warm ClientApp launcher: its command line is the
one flwr's own SubprocessExecutor would run, its children are real forked processes
that are reaped with their exit codes, and `run` ends with flower-supernode, passing
signals on. No Docker and no network: flwr is imported from the test environment, the
"SuperNode" is a small Python process, its Runtime API an unused loopback port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testcerts import load_entrypoint

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def launcher():
    return load_entrypoint(HERE / "launcher.py", "supernode_launcher")


def spec(task_type: str = "flwr-clientapp", **over):
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import ExecutionSpec
    fields = dict(task_type=TaskType(task_type), runtime_api_address="127.0.0.1:9094", token="tok123",
                  insecure=True, root_certificates_path=None, runtime_dependency_install=False,
                  parent_pid=4242, suppress_output=False, task_id=7)
    fields.update(over)
    return ExecutionSpec(**fields)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ settings
def test_preload_accepts_spaces_and_commas_and_refuses_a_non_module(launcher):
    assert launcher.preload_modules("numpy, sklearn.linear_model  torch") == \
        ["numpy", "sklearn.linear_model", "torch"]
    assert launcher.preload_modules("  ") == []
    with pytest.raises(ValueError, match="SUPERNODE_PRELOAD item 'numpy;rm'"):
        launcher.preload_modules("numpy;rm")


def test_poll_interval_is_bounded_like_flwrs(launcher):
    assert launcher.poll_interval("0.5") == 0.5
    for bad in ("0", "61", "soon"):
        with pytest.raises(ValueError, match="SUPERNODE_TASK_POLL_INTERVAL"):
            launcher.poll_interval(bad)


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("over", [
    {},
    {"insecure": False, "root_certificates_path": "/etc/ca.crt", "runtime_dependency_install": True},
    {"parent_pid": None},
])
def test_the_clientapp_command_is_the_one_flwrs_own_executor_runs(launcher, monkeypatch, over):
    from flwr.supercore.superexec.executor import subprocess_executor
    seen = []
    monkeypatch.setattr(subprocess_executor.subprocess, "Popen", lambda args, **_: seen.append(args))
    s = spec(**over)
    subprocess_executor.SubprocessExecutor().launch(s)
    assert launcher.clientapp_argv(s.runtime_api_address, s.token, s.parent_pid, s.insecure,
                                   s.root_certificates_path, s.runtime_dependency_install) == seen[0]


def test_the_command_parses_with_flwrs_clientapp_parser(launcher):
    from flwr.supernode.cli.flwr_clientapp import _parse_args_run_flwr_clientapp
    argv = launcher.clientapp_argv("127.0.0.1:19094", "tok", 99)
    args = _parse_args_run_flwr_clientapp().parse_args(argv[1:])
    assert (args.runtime_api_address, args.token, args.insecure, args.parent_pid) == \
        ("127.0.0.1:19094", "tok", True, 99)


# ------------------------------------------------------------------ forked children
def wait_reaped(children, count: int, timeout: float = 10) -> list:
    done, deadline = [], time.time() + timeout
    while len(done) < count:
        assert time.time() < deadline, f"only {done} of {count} children ended"
        done += children.reap()
        time.sleep(0.02)
    return done


def test_children_are_reaped_with_their_exit_codes_and_leave_no_zombie(launcher):
    children = launcher.Children()
    for code, task in ((0, 1), (3, 2)):
        pid = os.fork()
        if pid == 0:
            os._exit(code)
        children.add(pid, task)
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    children.add(pid, 3)
    done = wait_reaped(children, 3)
    assert sorted((task, code) for _, task, code in done) == [(1, 0), (2, 3), (3, 137)]
    assert children.tasks == {}
    for pid, _, _ in done:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def forking_executor(launcher, entry):
    from flwr.supercore.superexec.executor import LaunchResult
    return launcher.ForkExecutor(entry, launcher.Children(), LaunchResult)


@pytest.mark.parametrize("behaviour, expected", [("return", 0), ("exit5", 5), ("raise", 1)])
def test_a_launch_forks_a_child_that_runs_the_entry_with_flwrs_command_line(launcher, tmp_path, behaviour, expected):
    out = tmp_path / "argv"

    def entry():
        out.write_text(" ".join(sys.argv))
        if behaviour == "exit5":
            raise SystemExit(5)
        if behaviour == "raise":
            raise RuntimeError("the ClientApp broke")

    executor = forking_executor(launcher, entry)
    result = executor.launch(spec())
    assert str(result.status) == "accepted"
    (pid, task, code), = wait_reaped(executor.children, 1)
    assert (task, code) == (7, expected)
    assert pid != os.getpid()
    assert out.read_text() == "flwr-clientapp --runtime-api-address 127.0.0.1:9094 --token tok123 --insecure --parent-pid 4242"


def test_only_clientapp_tasks_are_launched(launcher):
    executor = forking_executor(launcher, lambda: None)
    from flwr.supercore.constant import TaskType
    assert executor.get_eligible_capacity(set(TaskType))[0] == {TaskType.CLIENT_APP}
    result = executor.launch(spec("flwr-serverapp"))
    assert str(result.status) == "failed" and "flwr-serverapp" in result.message
    assert executor.children.tasks == {}


# ------------------------------------------------------------------ run: the container's main process
RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {folder!r})
    import launcher
    sys.exit(launcher.run({cmd!r}, "127.0.0.1:{port}", ["json"], 0.2))
""")

FAKE_SUPERNODE = textwrap.dedent("""
    import signal, sys, time
    def stop(signum, frame):
        open({mark!r}, "w").write(str(signum))
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    time.sleep({life})
    sys.exit(7)
""")


def start_run(tmp_path: Path, life: float) -> tuple[subprocess.Popen, Path]:
    mark = tmp_path / "supernode-stopped"
    cmd = [sys.executable, "-c", FAKE_SUPERNODE.format(mark=str(mark), life=life)]
    code = RUN.format(folder=str(HERE), cmd=cmd, port=free_port())
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    return proc, mark


def test_run_ends_with_the_supernode_and_returns_its_exit_code(tmp_path):
    proc, mark = start_run(tmp_path, life=6)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert "flwr + json imported" in err and "ClientApps are forked from pid" in err
    assert not mark.exists()


def test_sigterm_is_passed_to_the_supernode_and_run_exits_with_it(tmp_path):
    proc, mark = start_run(tmp_path, life=60)
    deadline = time.time() + 30
    while True:   # the SuperNode is started before flwr is imported: wait for the imports
        line = proc.stderr.readline()
        if "ClientApps are forked" in line:
            break
        assert line and time.time() < deadline, "the launcher did not start"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert mark.read_text() == str(int(signal.SIGTERM))
    assert proc.returncode == 0
