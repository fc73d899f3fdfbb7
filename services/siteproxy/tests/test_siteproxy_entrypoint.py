"""services/siteproxy/entrypoint.py: settings, the rendered nginx.conf (the organisation's
certificate presented to the edge, the edge verified against the project CA) and the TLS
check, with real certificates made in a temporary folder.

The entrypoint is loaded by path (it is a script, not a package); it finds nginx.conf.j2
next to itself.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testcerts import load_entrypoint, make_ca, make_key, make_leaf, write_tls

ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint.py"
FLEET = {"FLEET_ADDRESS": "fleet.fl.localhost:443"}
DOCKER_DNS = "nameserver 127.0.0.11\noptions ndots:0\n"


@pytest.fixture(scope="module")
def ep():
    return load_entrypoint(ENTRYPOINT, "siteproxy_entrypoint")


# ------------------------------------------------------------------ certificates
ORG_SANS = {"dns": ("supernode-alpha", "localhost"), "ips": ("127.0.0.1",)}


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture
def org_tls(tmp_path, ca):
    return write_tls(tmp_path / "tls", ca, make_leaf(ca, "org-alpha", **ORG_SANS))


# ------------------------------------------------------------------ settings
def test_settings_defaults_and_blank_values(ep):
    s = ep.load_settings({"LISTEN_PORT": "  ", "FL_DOMAIN": " fl.test "})
    assert s["LISTEN_PORT"] == "9443"
    assert s["LISTEN_ADDRESS"] == "127.0.0.1"
    assert s["FL_DOMAIN"] == "fl.test"
    assert s["FL_TLS_DIR"] == "/etc/fl/tls"


@pytest.mark.parametrize("env, expected", [
    ({"FLEET_ADDRESS": "fleet.fl.localhost:443"}, ("fleet.fl.localhost", 443)),
    ({"FLEET_ADDRESS": "fleet.fl.localhost"}, ("fleet.fl.localhost", 443)),
    ({"FLEET_ADDRESS": "edge:8443"}, ("edge", 8443)),
    ({"FL_DOMAIN": "fl.test"}, ("fleet.fl.test", 443)),
])
def test_fleet_address(ep, env, expected):
    assert ep.parse_fleet_address(ep.load_settings(env)) == expected


@pytest.mark.parametrize("env, message", [
    ({}, "FLEET_ADDRESS is not set"),
    ({"FLEET_ADDRESS": "https://fleet.fl.localhost"}, "give host:port, without a scheme or path"),
    ({"FLEET_ADDRESS": "fleet.fl.localhost:443/v1"}, "without a scheme or path"),
    ({"FLEET_ADDRESS": "fleet:https"}, "FLEET_ADDRESS='fleet:https' is not host:port"),
    ({"FLEET_ADDRESS": "fleet:0"}, "FLEET_ADDRESS='fleet:0' is not host:port"),
    ({"FLEET_ADDRESS": ":443"}, "FLEET_ADDRESS=':443' is not host:port"),
])
def test_bad_fleet_address_is_named(ep, env, message):
    with pytest.raises(ep.ConfigError) as err:
        ep.parse_fleet_address(ep.load_settings(env))
    assert message in str(err.value)


def test_resolvers_from_resolv_conf(ep):
    text = "# Docker\nnameserver 127.0.0.11\nnameserver fe80::1%eth0\nnameserver bogus\nsearch x\n"
    assert ep.resolvers_from(text) == ["127.0.0.11", "[fe80::1]"]
    assert ep.resolvers_from("") == []


@pytest.mark.parametrize("env, message", [
    ({"LISTEN_PORT": "https"}, "LISTEN_PORT='https' is not a port number"),
    ({"LISTEN_PORT": "70000"}, "LISTEN_PORT='70000' is not a port number"),
    ({"LISTEN_ADDRESS": "localhost"}, "LISTEN_ADDRESS='localhost' is not an IP address"),
    ({"ERROR_LOG_LEVEL": "verbose"}, "ERROR_LOG_LEVEL='verbose' is not an NGINX log level"),
    ({"RESOLVER_VALID": "ten seconds"}, "RESOLVER_VALID='ten seconds' is not an NGINX time"),
    ({"PROXY_TIMEOUT": "1d"}, "PROXY_TIMEOUT='1d' is not an NGINX time"),
    ({"CLIENT_MAX_BODY_SIZE": "1TB"}, "CLIENT_MAX_BODY_SIZE='1TB' is not an NGINX size"),
])
def test_bad_settings_are_named(ep, env, message):
    with pytest.raises(ep.ConfigError) as err:
        ep.context(ep.load_settings({**FLEET, **env}), DOCKER_DNS)
    assert message in str(err.value)


def test_no_nameserver_needs_resolver(ep):
    with pytest.raises(ep.ConfigError, match="no nameserver in /etc/resolv.conf: set RESOLVER"):
        ep.context(ep.load_settings(FLEET), "")
    values = ep.context(ep.load_settings({**FLEET, "RESOLVER": "10.0.0.2,10.0.0.3"}), "")
    assert values["resolver"] == "10.0.0.2 10.0.0.3"


# ------------------------------------------------------------------ the rendered config
@pytest.fixture(scope="module")
def conf(ep) -> str:
    return ep.render(ep.context(ep.load_settings(FLEET), DOCKER_DNS))


def directive(conf: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;]+);", conf, re.M)]


def fleet_location(conf: str) -> str:
    start = conf.index("location /v1/fleet/ {")
    return conf[start:conf.index("\n        }", start)]


def test_listens_on_the_site_loopback_only_with_tls(conf):
    assert directive(conf, "listen") == ["127.0.0.1:9443 ssl"]
    assert directive(conf, "ssl_certificate") == ["/etc/fl/tls/tls.crt"]
    assert directive(conf, "ssl_certificate_key") == ["/etc/fl/tls/tls.key"]
    assert directive(conf, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]


def test_presents_the_org_certificate_to_the_edge(conf):
    fleet = fleet_location(conf)
    assert directive(fleet, "proxy_pass") == ["https://$fleet_upstream"]
    assert 'set $fleet_upstream "fleet.fl.localhost:443";' in fleet
    assert directive(fleet, "proxy_ssl_certificate") == ["/etc/fl/tls/tls.crt"]
    assert directive(fleet, "proxy_ssl_certificate_key") == ["/etc/fl/tls/tls.key"]


def test_verifies_the_edge_against_the_project_ca(conf):
    fleet = fleet_location(conf)
    assert directive(fleet, "proxy_ssl_verify") == ["on"]
    assert directive(fleet, "proxy_ssl_trusted_certificate") == ["/etc/fl/tls/ca.crt"]
    assert directive(fleet, "proxy_ssl_server_name") == ["on"]
    assert directive(fleet, "proxy_ssl_name") == ["fleet.fl.localhost"]
    assert directive(fleet, "proxy_ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directive(fleet, "proxy_set_header Host") == ['"fleet.fl.localhost"']
    assert "proxy_ssl_verify off" not in conf


def test_forwards_the_fleet_api_and_nothing_else(conf):
    assert re.findall(r"^\s*location\s+([^{]+?)\s*\{", conf, re.M) == ["= /healthz", "/v1/fleet/", "/"]
    assert len(directive(conf, "proxy_pass")) == 1
    root = conf[conf.index("location / {"):]
    assert "return 404;" in root.split("}")[0]


def test_streams_and_resolves_per_request(conf):
    assert directive(conf, "resolver") == ["127.0.0.11 valid=10s ipv6=off"]
    fleet = fleet_location(conf)
    assert directive(fleet, "proxy_buffering") == ["off"]
    assert directive(fleet, "proxy_request_buffering") == ["off"]
    assert directive(fleet, "client_max_body_size") == ["0"]


def test_no_secrets_in_the_logs(conf, ep):
    assert directive(conf, "access_log") == ["off", "off"]    # http level and /healthz
    fmt = re.search(r"log_format site(.+?);", conf, re.S).group(1)
    assert "$http_" not in fmt and "$request " not in fmt and "$args" not in fmt
    on = ep.render(ep.context(ep.load_settings({**FLEET, "SITEPROXY_ACCESS_LOG": "1"}), DOCKER_DNS))
    assert "/dev/stdout site" in directive(on, "access_log")


def test_a_non_default_fleet_port_and_tls_folder(ep):
    conf = ep.render(ep.context(ep.load_settings({"FLEET_ADDRESS": "edge.fl.test:8443",
                                                  "FL_TLS_DIR": "/srv/org"}), DOCKER_DNS))
    fleet = fleet_location(conf)
    assert directive(fleet, "proxy_set_header Host") == ['"edge.fl.test:8443"']
    assert directive(fleet, "proxy_ssl_name") == ["edge.fl.test"]
    assert directive(fleet, "proxy_ssl_certificate") == ["/srv/org/tls.crt"]
    assert directive(fleet, "proxy_ssl_trusted_certificate") == ["/srv/org/ca.crt"]


def test_ipv6_listen_address(ep):
    conf = ep.render(ep.context(ep.load_settings({**FLEET, "LISTEN_ADDRESS": "::1"}), DOCKER_DNS))
    assert directive(conf, "listen") == ["[::1]:9443 ssl"]


# ------------------------------------------------------------------ the TLS check
def test_deployed_org_material_passes(ep, org_tls):
    assert ep.tls_problems(org_tls) == []


def test_missing_files(ep, tmp_path):
    problems = ep.tls_problems(tmp_path)
    assert len(problems) == 3
    assert all("is missing; mount ca/deploy/org-<org>/ there (invoke ca.deploy)" in p for p in problems)


def test_missing_key_file(ep, org_tls):
    (org_tls / "tls.key").unlink()
    assert ep.tls_problems(org_tls) == [
        f"{org_tls}/tls.key is missing; mount ca/deploy/org-<org>/ there (invoke ca.deploy)"]


def test_unreadable_key(ep, org_tls, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("tls.key") else real(p, mode))
    assert "tls.key is not readable by uid" in ep.tls_problems(org_tls)[0]


def _one_problem(ep, folder) -> str:
    problems = ep.tls_problems(folder)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{folder}/tls.crt does not serve 127.0.0.1 for the SuperNode")
    return problems[0]


def test_mismatched_key(ep, tmp_path, ca):
    folder = write_tls(tmp_path, ca, make_leaf(ca, "org-alpha", **ORG_SANS),
                       key=make_key())
    _one_problem(ep, folder)


def test_certificate_without_the_loopback_san(ep, tmp_path, ca):
    folder = write_tls(tmp_path, ca, make_leaf(ca, "org-alpha", dns=("supernode-alpha", "localhost")))
    assert "127.0.0.1" in _one_problem(ep, folder)


def test_certificate_without_any_san(ep, tmp_path, ca):
    _one_problem(ep, write_tls(tmp_path, ca, make_leaf(ca, "org-alpha")))


def test_certificate_of_another_ca(ep, tmp_path, ca):
    stranger = make_ca("Somebody Else's CA")
    folder = write_tls(tmp_path, ca, make_leaf(stranger, "org-alpha", **ORG_SANS))
    assert "certificate verify failed" in _one_problem(ep, folder)


def test_expired_certificate(ep, tmp_path, ca):
    folder = write_tls(tmp_path, ca, make_leaf(ca, "org-alpha", expired=True, **ORG_SANS))
    assert "expired" in _one_problem(ep, folder)


def test_other_listen_address_needs_its_san(ep, org_tls):
    problems = ep.tls_problems(org_tls, "127.0.0.2")
    assert len(problems) == 1 and "SAN IP:127.0.0.2" in problems[0]


# ------------------------------------------------------------------ the script
OWN_VARIABLES = ("FLEET_ADDRESS", "FL_", "LISTEN_", "RESOLVER", "CLIENT_MAX_BODY_SIZE",
                 "PROXY_TIMEOUT", "SITEPROXY_", "ERROR_LOG_LEVEL")


def run(mode: str, **env: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)}
    return subprocess.run([sys.executable, str(ENTRYPOINT), mode], env={**keep, **env},
                          capture_output=True, text=True, timeout=60)


def test_script_render_mode():
    out = run("render", FLEET_ADDRESS="fleet.fl.localhost:443", RESOLVER="127.0.0.11")
    assert out.returncode == 0, out.stderr
    assert "proxy_ssl_verify on;" in out.stdout


def test_script_names_a_bad_setting_without_a_traceback(org_tls):
    out = run("check", FLEET_ADDRESS="fleet.fl.localhost:443", LISTEN_PORT="nine", FL_TLS_DIR=str(org_tls))
    assert out.returncode == 2
    assert "siteproxy entrypoint: LISTEN_PORT='nine' is not a port number" in out.stderr
    assert "Traceback" not in out.stderr


def test_script_check_names_a_missing_key(org_tls):
    (org_tls / "tls.key").unlink()
    out = run("check", FLEET_ADDRESS="fleet.fl.localhost:443", FL_TLS_DIR=str(org_tls))
    assert out.returncode == 2
    assert f"cannot start:\n  - {org_tls}/tls.key is missing" in out.stderr
