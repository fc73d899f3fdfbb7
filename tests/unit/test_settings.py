"""Settings as Compose reads them (.env, build/federation.env, .env.local, then the
environment), the instance folder, and the preflight's version check."""
from pathlib import Path

import pytest

from fedops import compose, paths, pki, preflight
from fedops.errors import FedopsError


def local_env(text: str) -> Path:
    paths.LOCAL_ENV.parent.mkdir(parents=True, exist_ok=True)
    paths.LOCAL_ENV.write_text(text)
    return paths.LOCAL_ENV


def test_the_instance_holds_everything_generated(hermetic):
    assert paths.instance() == hermetic
    for name in ("PKI_DIR", "DEPLOY_DIR", "SECRETS_DIR", "BUILD_DIR", "BACKUPS_DIR", "LOCAL_CONFIG", "LOCAL_ENV"):
        assert getattr(paths, name).is_relative_to(hermetic), name
    assert paths.CONFIG.parent == paths.ROOT   # the committed configuration stays in the checkout


def test_without_an_instance_folder_the_checkout_is_the_instance(monkeypatch):
    monkeypatch.delenv(paths.INSTANCE_ENV)
    assert paths.instance() == paths.ROOT and paths.is_default_instance()
    assert paths.PKI_DIR == paths.ROOT / "ca" / "pki"


def test_env_files_are_read_the_way_compose_reads_them():
    local_env('# a comment\n'
              'export FL_HTTPS_PORT=8443   # after the value: a comment\n'
              'FL_BIND_ADDRESS="127.0.0.2"\n'
              "IMAGE_TAG='quoted # not a comment'\n"
              'FL_HTTP_PORT=${FL_HTTPS_PORT}\n')
    values = compose.settings()
    assert values["FL_HTTPS_PORT"] == "8443"
    assert values["FL_BIND_ADDRESS"] == "127.0.0.2"
    assert values["IMAGE_TAG"] == "quoted # not a comment"
    assert values["FL_HTTP_PORT"] == "8443"
    assert values["FL_SERVICES_SUBNET"] == "172.20.0.0/16"   # from the committed .env


def test_the_environment_wins_over_the_files(monkeypatch):
    local_env("FL_POSTGRES_PORT=15432\n")
    assert compose.settings()["FL_POSTGRES_PORT"] == "15432"
    monkeypatch.setenv("FL_POSTGRES_PORT", "25432")
    assert compose.settings()["FL_POSTGRES_PORT"] == "25432"
    assert compose.settings()["FL_BIND_ADDRESS"] == "127.0.0.1"


@pytest.mark.parametrize(("line", "words"), [
    ("FL_HTTPS_PORT=44x3", "FL_HTTPS_PORT='44x3' ({env}) is not a port number"),
    ("FL_POSTGRES_PORT=70000", "FL_POSTGRES_PORT='70000' ({env}) is not a port number"),
    ("FL_SERVICES_SUBNET=172.20.0.0/33", "FL_SERVICES_SUBNET='172.20.0.0/33' ({env}) is not a subnet"),
    ("FL_CLIENTS_SUBNET=172.21.0.1/16", "FL_CLIENTS_SUBNET='172.21.0.1/16' ({env}) is not a subnet"),
    ("FL_ADMIN_BIND_ADDRESS=localhost", "FL_ADMIN_BIND_ADDRESS='localhost' ({env}) is not an IP address"),
    ("FL_HEALTH_INTERVAL=10 seconds", "FL_HEALTH_INTERVAL='10 seconds' ({env}) is not a duration"),
    ("COMPOSE_PROJECT_NAME=My Stack", "COMPOSE_PROJECT_NAME='My Stack' ({env}) is not a Compose project name"),
])
def test_a_bad_value_names_its_key_and_file(line, words):
    env = local_env(line + "\n")
    with pytest.raises(FedopsError) as err:
        compose.settings()
    assert words.format(env=env) in str(err.value)
    assert f"fix {line.split('=')[0]} in {env}" in str(err.value)


def test_a_bad_value_from_the_environment_says_so(monkeypatch):
    monkeypatch.setenv("FL_HTTPS_PORT", "https")
    with pytest.raises(FedopsError, match="your environment"):
        compose.settings()


def test_compose_runs_with_the_instance_folder():
    assert compose.environment()[paths.INSTANCE_ENV] == str(paths.instance())
    argv = compose.argv()
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    assert files[0] == str(paths.ROOT / "docker-compose.yml")
    assert argv[argv.index("--project-directory") + 1] == str(paths.ROOT)


@pytest.mark.parametrize(("text", "ok"), [
    ("2.26.1-4\n", True), ("v2.29.7", True), ("2.20.0", True), ("2.19.1", False), ("1.29.2", False), ("", False)])
def test_the_compose_version_the_files_need(text, ok):
    if ok:
        preflight.check_compose_version(text)
    else:
        with pytest.raises(FedopsError, match="too old.*2.20 or newer") as err:
            preflight.check_compose_version(text)
        assert "docker-compose-plugin" in err.value.fix


def test_the_ca_tools_container_gets_its_options_before_the_service_name(fed):
    """`docker compose run [OPTIONS] SERVICE COMMAND`: an -e after the service would be
    taken as the command (the bug that broke hosts without easy-rsa)."""
    runner = pki.default_runner(compose_argv=["docker", "compose", "-p", "x"], mode="container")
    cmd, env = runner.command(["build-ca", "nopass"], {"EASYRSA_BATCH": "1"})
    service = cmd.index("ca-tools")
    assert cmd[service + 1:] == ["easyrsa", "--pki-dir=/ca/pki", "build-ca", "nopass"]
    options = cmd[:service]
    assert options[:4] == ["docker", "compose", "-p", "x"] and "run" in options
    assert options[options.index("-e") + 1] in ("EASYRSA_BATCH=1", "EASYRSA_EXT_DIR=/x509-types")
    assert {"EASYRSA_BATCH=1", "EASYRSA_EXT_DIR=/x509-types"} <= set(options)
    assert env[paths.INSTANCE_ENV] == str(paths.instance())


def test_an_unknown_easyrsa_mode_is_refused():
    local_env("FL_EASYRSA=docker\n")
    with pytest.raises(FedopsError, match="FL_EASYRSA='docker' is not one of auto, host, container"):
        pki.default_runner(compose_argv=["docker", "compose"])
