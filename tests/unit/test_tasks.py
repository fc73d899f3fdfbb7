"""Tasks build the right command lines (invoke's MockContext; nothing runs)."""
import pytest
from invoke import Exit, MockContext, Result

from fedops import compose, engine, paths
from fedops.tasks import stack as stack_tasks


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """`down` removes the notebook servers through the engine: recorded here instead."""
    calls = []
    monkeypatch.setattr(engine, "remove_notebooks", lambda project, volumes=False: calls.append((project, volumes)) or [])
    return calls


def test_compose_argv_names_project_files_and_profiles():  # in the hermetic instance
    argv = compose.argv(["gpu"])
    assert argv[:2] == ["docker", "compose"]
    assert argv[argv.index("-p") + 1] == compose.project_name() == "flfed"
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    assert files[0] == str(paths.ROOT / "docker-compose.yml")
    # the GPU overlay, then (once rendered) its per-organisation half
    gpu = files.index(str(paths.ROOT / "compose.gpu.yml"))
    assert files[gpu + 1:] in ([], [str(compose.gpu_sites_overlay())])
    assert argv[-2:] == ["--profile", "gpu"]
    assert "--profile" not in compose.argv([])


def test_settings_environment_overrides_env_file(monkeypatch):
    monkeypatch.setenv("FL_POSTGRES_PORT", "15432")
    assert compose.settings()["FL_POSTGRES_PORT"] == "15432"
    assert compose.settings()["FL_BIND_ADDRESS"] == "127.0.0.1"


def test_down_keeps_volumes_by_default(capsys):
    c = MockContext(run=Result(""), repeat=True)
    stack_tasks.down(c)
    out = capsys.readouterr().out
    assert " down --remove-orphans" in out and "--volumes" not in out


def test_down_removes_this_projects_notebook_servers(no_engine):
    stack_tasks.down(MockContext(run=Result()))
    stack_tasks.down(MockContext(run=Result()), volumes=True, yes=True)
    assert no_engine == [("flfed", False), ("flfed", True)]


def test_down_volumes_with_yes_wipes(capsys):
    c = MockContext(run=Result(""), repeat=True)
    stack_tasks.down(c, volumes=True, yes=True)
    assert "down --remove-orphans --volumes" in capsys.readouterr().out


def test_down_volumes_without_a_terminal_refuses(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    c = MockContext(run=Result(""), repeat=True)
    with pytest.raises(Exit, match="needs a confirmation"):
        stack_tasks.down(c, volumes=True)


def test_exec_or_run_chooses_by_state(capsys):
    c = MockContext(run=Result(""), repeat=True)
    compose.exec_or_run(c, "superlink", "flwr ls", running=True)
    compose.exec_or_run(c, "superlink", "flwr ls", running=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("exec -T superlink flwr ls")
    assert out[1].endswith("run --rm --no-deps superlink flwr ls")


def test_port_in_use_says_which_setting_to_change():
    import socket
    from fedops import preflight
    from fedops.errors import FedopsError
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not preflight.port_free("127.0.0.1", port)
        with pytest.raises(FedopsError, match="FL_POSTGRES_PORT=<port> in .env.local"):
            preflight.ports([("127.0.0.1", port, "FL_POSTGRES_PORT")], ours=set())
        preflight.ports([("127.0.0.1", port, "FL_POSTGRES_PORT")], ours={port})   # ours: fine


def test_every_task_has_help():
    import tasks

    def walk(coll):
        for t in coll.tasks.values():
            yield t
        for sub in coll.collections.values():
            yield from walk(sub)

    for t in walk(tasks.ns):
        assert t.__doc__ and t.__doc__.strip(), f"task {t.name} has no docstring"
        params = [a for a in t.get_arguments() if a.name not in ("c",)]
        for arg in params:
            assert arg.help, f"task {t.name}: option --{arg.name} has no help"


def test_up_without_a_docker_engine_says_what_to_do(tmp_path):
    """The real task (this venv's invoke, not the ./invoke wrapper, which would make a
    .venv), against an engine that is not there (a socket nobody listens on)."""
    import os
    import subprocess
    import sys
    from fedops import paths
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "up"], capture_output=True, text=True,
                          env=env, cwd=paths.ROOT, timeout=120)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "the Docker engine does not answer" in out and "systemctl start docker" in out
    assert "Traceback" not in out and "==> secrets" not in out   # stopped before preparing anything


def test_image_labels_name_the_image_not_the_first_service_using_it():
    from fedops import images
    assert images.label("flfed/supernode:0.1.0") == "supernode"
    assert images.label("registry.example/team/flfed/siteproxy:latest") == "siteproxy"
    assert images.label("postgres") == "postgres"
