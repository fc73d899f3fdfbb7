"""The hub's settings as the entrypoint renders them from the federation."""
import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("hub_entrypoint", Path(__file__).parents[1] / "entrypoint.py")
ep = importlib.util.module_from_spec(spec)
sys.modules["hub_entrypoint"] = ep
spec.loader.exec_module(ep)

FEDERATION = {
    "domain": "fl.example.org",
    "hostnames": {"hub": "hub.fl.example.org", "auth": "auth.fl.example.org", "control": "control.fl.example.org"},
    "urls": {"hub": "https://hub.fl.example.org:8443", "auth": "https://auth.fl.example.org:8443"},
    "connection_name": "fl",
    "notebooks": {"cpu_limit": 2, "mem_limit": "4G", "idle_timeout": 600, "concurrent_spawn_limit": 5},
}
ENV = {"FL_NOTEBOOK_IMAGE": "flfed/notebook:1", "FL_NOTEBOOK_NETWORK": "p_fl-notebooks-network",
       "FL_NOTEBOOK_PREFIX": "jupyter-p"}
SECRETS = {"db_password": "d" * 20, "client_secret": "c" * 20, "cookie_secret": "k" * 32, "crypt_key": "x" * 32,
           "metrics_token": "m" * 32}


def test_browser_urls_are_public_and_back_channel_urls_go_to_the_edge_on_443():
    s = ep.settings(FEDERATION, ENV, SECRETS)
    o = s["oauth"]
    assert o["authorize_url"] == "https://auth.fl.example.org:8443/realms/flowerfl/protocol/openid-connect/auth"
    assert o["token_url"] == "https://auth.fl.example.org/realms/flowerfl/protocol/openid-connect/token"
    assert o["userdata_url"].startswith("https://auth.fl.example.org/realms/flowerfl/")
    assert o["callback_url"] == "https://hub.fl.example.org:8443/hub/oauth_callback"
    assert "post_logout_redirect_uri=https://hub.fl.example.org:8443/hub/login" in o["logout_redirect_url"]
    assert o["allowed_groups"] == ["jupyter_users", "jupyter_admins"] and o["admin_groups"] == ["jupyter_admins"]


def test_the_database_is_verified_tls():
    s = ep.settings(FEDERATION, ENV, SECRETS)
    assert s["db_url"].startswith("postgresql+psycopg://jupyterhub@postgres:5432/jupyterhub?")
    assert "sslmode=verify-full" in s["db_url"] and "sslrootcert=/etc/fl/tls/ca.crt" in s["db_url"]
    assert SECRETS["db_password"] not in s["db_url"]


def test_notebook_settings_come_from_the_federation_and_compose():
    n = ep.settings(FEDERATION, ENV, SECRETS)["notebooks"]
    assert n == {"cpu_limit": 2.0, "mem_limit": "4G", "idle_timeout": 600, "concurrent_spawn_limit": 5,
                 "image": "flfed/notebook:1", "network": "p_fl-notebooks-network", "prefix": "jupyter-p",
                 "docker_api": "tcp://dockerproxy:2375", "gpus": 0, "egress_proxy": ""}
    defaults = ep.settings({**FEDERATION, "notebooks": None}, ENV, SECRETS)["notebooks"]
    assert defaults["idle_timeout"] == 3600 and defaults["concurrent_spawn_limit"] == 20


def test_servers_get_the_egress_proxy_and_reach_the_platform_hosts_directly():
    s = ep.settings(FEDERATION, {**ENV, "FL_NOTEBOOK_EGRESS_PROXY": "http://egress-proxy:3128"}, SECRETS)
    assert s["notebooks"]["egress_proxy"] == "http://egress-proxy:3128"
    assert s["no_proxy"].split(",") == ["jupyterhub", "auth.fl.example.org", "control.fl.example.org",
                                        "hub.fl.example.org", "localhost", "127.0.0.1"]
    assert s["hub_connect_url"] == "http://jupyterhub:8081"      # its host is in no_proxy


@pytest.mark.parametrize("change,message", [
    ({"mem_limit": "lots"}, "mem_limit"),
    ({"cpu_limit": 0}, "cpu_limit"),
    ({"concurrent_spawn_limit": 0}, "concurrent_spawn_limit"),
])
def test_bad_notebook_settings_are_named(change, message):
    with pytest.raises(ep.ConfigError, match=message):
        ep.settings({**FEDERATION, "notebooks": {**FEDERATION["notebooks"], **change}}, ENV, SECRETS)


def test_missing_compose_values_and_a_foreign_prefix_are_refused():
    with pytest.raises(ep.ConfigError, match="FL_NOTEBOOK_NETWORK"):
        ep.settings(FEDERATION, {k: v for k, v in ENV.items() if k != "FL_NOTEBOOK_NETWORK"}, SECRETS)
    with pytest.raises(ep.ConfigError, match="jupyter-"):
        ep.settings(FEDERATION, {**ENV, "FL_NOTEBOOK_PREFIX": "p"}, SECRETS)


def test_a_federation_file_without_urls_says_what_to_do():
    with pytest.raises(ep.ConfigError, match="invoke up"):
        ep.settings({"domain": "x.org"}, ENV, SECRETS)


def test_the_crypt_key_is_32_bytes_of_hex_derived_from_the_secret():
    key = ep.crypt_key("some secret value")
    assert len(bytes.fromhex(key)) == 32 and key == ep.crypt_key("some secret value")


def test_secrets_are_read_from_files_and_short_ones_refused(tmp_path):
    (tmp_path / "good").write_text("a" * 32 + "\n")
    (tmp_path / "short").write_text("abc")
    assert ep.read_secret("good", tmp_path) == "a" * 32
    with pytest.raises(ep.ConfigError, match="shorter"):
        ep.read_secret("short", tmp_path)
    with pytest.raises(ep.ConfigError, match="invoke secrets.generate"):
        ep.read_secret("missing", tmp_path)


def test_the_database_password_goes_to_a_libpq_password_file_escaped():
    s = ep.settings(FEDERATION, ENV, {**SECRETS, "db_password": "a:b\\c" + "x" * 16})
    assert ep.pgpass_line(s) == "postgres:5432:jupyterhub:jupyterhub:a\\:b\\\\c" + "x" * 16 + "\n"


def test_the_metrics_token_is_read_from_its_secret_file():
    assert ep.SECRET_FILES["metrics_token"] == "jupyterhub_metrics_token"
    assert ep.settings(FEDERATION, ENV, SECRETS)["metrics_token"] == SECRETS["metrics_token"]


@pytest.mark.parametrize("value,expected", [("", 0), ("0", 0), ("1", 1), ("2", 2), ("all", -1), ("ALL", -1)])
def test_gpus_per_server_come_from_the_gpu_profile(value, expected):
    assert ep.settings(FEDERATION, {**ENV, "FL_NOTEBOOK_GPUS": value}, SECRETS)["notebooks"]["gpus"] == expected


def test_a_bad_gpu_count_is_named():
    with pytest.raises(ep.ConfigError, match="FL_GPUS_PER_NOTEBOOK"):
        ep.settings(FEDERATION, {**ENV, "FL_NOTEBOOK_GPUS": "many"}, SECRETS)
