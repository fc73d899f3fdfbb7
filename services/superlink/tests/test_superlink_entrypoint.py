"""services/superlink/entrypoint.py: the pure helpers (settings, the flower-superlink
command line, TLS and state checks), with real certificates made in a temporary folder.

The entrypoint is loaded by path (it is a script, not a package). The command line is
also parsed with flwr's own flower-superlink argument parser, so a renamed flag fails here
rather than in the container.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testcerts import load_entrypoint, make_ca, make_key, make_leaf, write_tls

ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint.py"


@pytest.fixture(scope="module")
def ep():
    return load_entrypoint(ENTRYPOINT, "superlink_entrypoint")


# ------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture
def good_tls(tmp_path, ca):
    """What `invoke ca.deploy` gives the SuperLink: SANs superlink, localhost, 127.0.0.1."""
    return write_tls(tmp_path / "tls", ca,
                     make_leaf(ca, "superlink", dns=("superlink", "localhost"), ips=("127.0.0.1",)))


# ------------------------------------------------------------------ settings
def test_defaults(ep):
    s = ep.settings({})
    assert s["SUPERLINK_PORT"] == "8000"
    assert s["SUPERLINK_DATABASE"] == "/data/state.db"
    assert s["SUPERLINK_ENABLE_SUPERNODE_AUTH"] == "1"
    assert s["FL_TLS_DIR"] == "/etc/fl/tls"


def test_empty_values_keep_defaults_except_where_empty_means_off(ep):
    s = ep.settings({"SUPERLINK_PORT": "", "SUPERLINK_HEALTH_ADDRESS": "", "UNRELATED": "x"})
    assert s["SUPERLINK_PORT"] == "8000"
    assert s["SUPERLINK_HEALTH_ADDRESS"] == ""
    assert "UNRELATED" not in s


# ------------------------------------------------------------------ the command line
def test_default_command_is_secure(ep):
    cmd = ep.build_command({})
    assert cmd[0] == "flower-superlink"
    assert "--insecure" not in cmd
    assert "--enable-supernode-auth" in cmd
    assert "--disable-runtime-dependency-installation" in cmd
    assert "--allow-runtime-dependency-installation" not in cmd
    pairs = dict(zip(cmd[1::], cmd[2::]))
    assert pairs["--ssl-ca-certfile"] == "/etc/fl/tls/ca.crt"
    assert pairs["--ssl-certfile"] == "/etc/fl/tls/tls.crt"
    assert pairs["--ssl-keyfile"] == "/etc/fl/tls/tls.key"
    assert pairs["--database"] == "/data/state.db"
    assert pairs["--port"] == "8000"
    assert pairs["--health-server-address"] == "0.0.0.0:9099"


def test_flwr_parses_the_command_as_intended(ep, monkeypatch):
    # The parser's default for dependency installation follows this variable: unset it,
    # so that the flag itself must switch installation off.
    monkeypatch.delenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", raising=False)
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    args = _parse_args_run_superlink().parse_args(ep.build_command({})[1:])
    assert args.insecure is False
    assert args.enable_supernode_auth is True
    assert args.runtime_dependency_install is False
    assert (args.ssl_ca_certfile, args.ssl_certfile, args.ssl_keyfile) == (
        "/etc/fl/tls/ca.crt", "/etc/fl/tls/tls.crt", "/etc/fl/tls/tls.key")
    assert args.database == "/data/state.db"
    assert args.isolation == "subprocess"
    assert args.port == 8000


def test_tls_folder_and_extra_args(ep):
    cmd = ep.build_command({"FL_TLS_DIR": "/srv/tls", "SUPERLINK_EXTRA_ARGS": "--log-file '/tmp/a b.log'"})
    assert "/srv/tls/tls.key" in cmd
    assert cmd[-2:] == ["--log-file", "/tmp/a b.log"]


def test_auth_can_be_switched_off_explicitly_only(ep):
    assert "--enable-supernode-auth" in ep.build_command({"SUPERLINK_ENABLE_SUPERNODE_AUTH": ""})
    assert "--enable-supernode-auth" not in ep.build_command({"SUPERLINK_ENABLE_SUPERNODE_AUTH": "0"})


def test_health_service_can_be_disabled(ep):
    assert "--health-server-address" not in ep.build_command({"SUPERLINK_HEALTH_ADDRESS": ""})


@pytest.mark.parametrize("env, message", [
    ({"SUPERLINK_PORT": "http"}, "SUPERLINK_PORT='http' is not a port number"),
    ({"SUPERLINK_PORT": "70000"}, "SUPERLINK_PORT='70000' is not a port number (1-65535)"),
    ({"SUPERLINK_PORT": "0"}, "SUPERLINK_PORT='0'"),
    ({"SUPERLINK_ISOLATION": "thread"}, "SUPERLINK_ISOLATION='thread': use subprocess or process"),
    ({"SUPERLINK_HEALTH_ADDRESS": "9099"}, "SUPERLINK_HEALTH_ADDRESS='9099' is not HOST:PORT"),
    ({"SUPERLINK_HEALTH_ADDRESS": "0.0.0.0:x"}, "SUPERLINK_HEALTH_ADDRESS's port='x'"),
])
def test_bad_settings_are_named(ep, env, message):
    with pytest.raises(ValueError) as err:
        ep.build_command(env)
    assert message in str(err.value)


# ------------------------------------------------------------------ TLS files
def test_deployed_material_passes(ep, good_tls):
    assert ep.tls_problems(good_tls) == []


def test_missing_files_are_named_with_the_fix(ep, tmp_path):
    problems = ep.tls_problems(tmp_path)
    assert len(problems) == 3
    assert all("invoke ca.deploy" in p for p in problems)
    assert any(f"{tmp_path}/tls.key is missing" in p for p in problems)


def test_missing_key_file_alone(ep, good_tls):
    (good_tls / "tls.key").unlink()
    assert ep.tls_problems(good_tls) == [f"{good_tls}/tls.key is missing; run: invoke ca.deploy"]


def test_unreadable_key(ep, good_tls, monkeypatch):
    # chmod alone proves nothing when the tests run as root: ask os.access instead
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("tls.key") else real(p, mode))
    problems = ep.tls_problems(good_tls)
    assert problems == [f"{good_tls}/tls.key is not readable by uid {os.getuid()}; "
                        "run: invoke ca.deploy (it sets the owner)"]


def test_key_of_another_certificate(ep, tmp_path, ca):
    leaf = make_leaf(ca, "superlink", dns=("superlink",), ips=("127.0.0.1",))
    other = make_key()
    problems = ep.tls_problems(write_tls(tmp_path, ca, leaf, key=other))
    assert len(problems) == 1 and "do not load as a pair" in problems[0]


def test_certificate_without_the_loopback_san(ep, tmp_path, ca):
    leaf = make_leaf(ca, "superlink", dns=("superlink", "localhost"))
    problems = ep.tls_problems(write_tls(tmp_path, ca, leaf))
    assert len(problems) == 1
    assert "lacks the SAN IP Address:127.0.0.1" in problems[0]


def test_certificate_without_any_san(ep, tmp_path, ca):
    problems = ep.tls_problems(write_tls(tmp_path, ca, make_leaf(ca, "superlink")))
    assert any("lacks the SAN" in p for p in problems)


def test_ca_file_that_is_no_certificate(ep, good_tls):
    (good_tls / "ca.crt").write_text("not a certificate\n")
    problems = ep.tls_problems(good_tls)
    assert len(problems) == 1 and "ca.crt is not a PEM CA certificate" in problems[0]


def test_cert_info_and_san_problems(ep, good_tls):
    info = ep.cert_info(good_tls / "tls.crt")
    assert ("DNS", "superlink") in info["subjectAltName"]
    assert ep.san_problems(info, (("IP Address", "127.0.0.1"),)) == []
    assert ep.san_problems(info, (("DNS", "fleet.fl.localhost"),)) == ["DNS:fleet.fl.localhost"]
    assert ep.san_problems({}, (("IP Address", "127.0.0.1"),)) == ["IP Address:127.0.0.1"]


# ------------------------------------------------------------------ state
def test_state_folder(ep, tmp_path):
    assert ep.data_problems(str(tmp_path / "state.db")) == []
    assert ep.data_problems(":memory:") == []
    missing = ep.data_problems(str(tmp_path / "nowhere" / "state.db"))
    assert len(missing) == 1 and "does not exist; mount the superlink-data volume" in missing[0]


def test_check_all_good(ep, good_tls, tmp_path):
    env = {"FL_TLS_DIR": str(good_tls), "SUPERLINK_DATABASE": str(tmp_path / "state.db")}
    assert ep.check(env) == []


def test_check_reports_a_bad_setting_before_files(ep):
    assert ep.check({"SUPERLINK_PORT": "x"}) == ["SUPERLINK_PORT='x' is not a port number"]


# ------------------------------------------------------------------ the script
def run(mode: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERLINK_", "FL_"))}
    return subprocess.run([sys.executable, str(ENTRYPOINT), mode], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_script_command_mode(ep):
    out = run("command")
    assert out.returncode == 0
    assert out.stdout.startswith("flower-superlink ") and "--enable-supernode-auth" in out.stdout


def test_script_command_mode_names_a_bad_port_without_a_traceback():
    out = run("command", SUPERLINK_PORT="eighty")
    assert out.returncode == 2
    assert "superlink entrypoint: SUPERLINK_PORT='eighty' is not a port number" in out.stderr
    assert "Traceback" not in out.stderr


def test_script_check_mode(good_tls, tmp_path):
    ok = run("check", FL_TLS_DIR=str(good_tls), SUPERLINK_DATABASE=str(tmp_path / "state.db"))
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    (good_tls / "tls.key").unlink()
    bad = run("check", FL_TLS_DIR=str(good_tls), SUPERLINK_DATABASE=str(tmp_path / "state.db"))
    assert bad.returncode == 2
    assert f"cannot start:\n  - {good_tls}/tls.key is missing" in bad.stderr


def test_script_unknown_mode():
    out = run("serve")
    assert out.returncode == 2 and "unknown mode 'serve'" in out.stderr
