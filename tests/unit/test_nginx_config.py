"""services/nginx: the rendered edge configuration (no Docker; the stack tests run it),
from the same federation.json the tasks render (fedops/render.py)."""
import json
import re

import pytest
import yaml

from fedops import config, paths, render, services
from testcerts import load_entrypoint

SERVICE = paths.SERVICES_DIR / "nginx"
ZONES = "services=172.20.0.0/16,clients=172.21.0.0/16,monitoring=172.22.0.0/16,superlink=172.23.0.0/16"


@pytest.fixture(scope="module")
def edge():
    return load_entrypoint(SERVICE / "entrypoint.py", "edge_entry")


@pytest.fixture(scope="module")
def federation():
    fed = config.parse(yaml.safe_load(paths.CONFIG.read_text()))
    return json.loads(render.federation_json(fed))


@pytest.fixture(scope="module")
def conf(edge, federation):
    return edge.render({**federation, "zone_subnets": ZONES})


def server_block(conf: str, name: str) -> str:
    """The text of the server block whose server_name is exactly `name`."""
    start = conf.index(f"server_name {name};")
    return conf[start:conf.find("\n    server {", start) if "\n    server {" in conf[start:] else len(conf)]


def zone_map(conf: str, host: str) -> set[str]:
    block = re.search(r"map \$edge_zone \$edge_allow_%s \{(.*?)\}" % host, conf, re.S).group(1)
    return {line.split()[0] for line in block.strip().splitlines() if line.strip().endswith(" 1;")}


def test_only_tls_12_and_13(conf):
    protocols = set(re.findall(r"^\s*ssl_protocols ([^;]+);", conf, re.M))
    assert protocols == {"TLSv1.2 TLSv1.3"}


def test_mozilla_intermediate_ciphers_only(conf):
    ciphers = re.search(r"^\s*ssl_ciphers ([^;]+);", conf, re.M).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)


def test_hsts_and_security_headers(conf):
    assert "Strict-Transport-Security" in conf and "max-age=63072000" in conf
    assert "X-Content-Type-Options" in conf and "server_tokens off" in conf


def test_fleet_requires_an_organisation_certificate_and_checks_the_crl(conf):
    fleet = server_block(conf, "fleet.fl.localhost")
    # verified, but refused below the zone guard: another zone gets no answer at all
    assert "ssl_verify_client optional;" in fleet
    guard, missing, failed = (fleet.index(x) for x in ("$edge_allow_fleet = 0", "return 496;", "return 495;"))
    assert guard < missing < failed < fleet.index("location /v1/fleet/")
    assert "ssl_crl /etc/fl/tls/crl.pem;" in fleet
    assert "client_max_body_size" in fleet and "proxy_buffering off" in fleet
    assert "if ($request_method != POST)" in fleet and "return 405" in fleet


def test_unknown_names_get_nothing(conf):
    assert "ssl_reject_handshake on;" in conf
    assert "return 444;" in conf


def test_secrets_are_never_logged(conf):
    formats = re.findall(r"log_format[^;]+;", conf, re.S)
    assert formats
    for fmt in formats:
        assert "flwr" not in fmt.lower() and "authorization" not in fmt.lower()
    assert "$ssl_client_verify" in formats[0] and "$ssl_client_s_dn" in formats[0]


def test_every_public_hostname_has_a_server(conf, federation):
    assert set(federation["hostnames"]) == {h.name for h in services.PUBLIC_HOSTS}
    for name in federation["hostnames"].values():
        assert f"server_name {name};" in conf


def test_every_host_answers_exactly_its_zones(conf, federation):
    """fedops/services.py says which internal zones may use each public host; the edge
    closes other zones' requests (444) before any location runs."""
    for host in services.PUBLIC_HOSTS:
        assert zone_map(conf, host.name) == {"external", *host.zones}, host.name
        block = server_block(conf, federation["hostnames"][host.name])
        assert f"if ($edge_allow_{host.name} = 0)" in block.split("location", 1)[0]
    for zone, subnet in (item.split("=") for item in ZONES.split(",")):
        assert f"{subnet} {zone};" in re.search(r"geo \$edge_zone \{(.*?)\}", conf, re.S).group(1)


def test_sites_reach_only_the_fleet_host(conf):
    allowed = {h.name for h in services.PUBLIC_HOSTS if "clients" in zone_map(conf, h.name)}
    assert allowed == {"fleet"}


def test_ctlgate_is_reached_over_verified_tls(conf):
    assert "http://$ctlgate_upstream" not in conf
    for location in ("= /status.json", "= /v1/control/get-login-details", "= /_auth"):
        block = conf[conf.index(f"location {location}"):]
        block = block[:block.index("\n        }")]
        assert "proxy_pass https://$ctlgate_upstream" in block and "proxy_ssl_verify on;" in block
        assert "proxy_ssl_name ctlgate;" in block


def test_stub_status_answers_only_the_monitoring_zone(conf):
    internal = conf[conf.index("listen 8080;"):]
    assert "if ($edge_allow_internal = 0)" in internal
    status = internal[internal.index("location = /nginx_status"):]
    assert status.index("if ($edge_zone != monitoring)") < status.index("stub_status;")
    assert zone_map(conf, "internal") == {"monitoring", "services"}


def test_keycloak_metrics_only_for_the_monitoring_zone_over_verified_tls(conf):
    internal = conf[conf.index("listen 8080;"):]
    block = internal[internal.index("location = /keycloak/metrics"):]
    block = block[:block.index("\n        }")]
    assert block.index("if ($edge_zone != monitoring)") < block.index("proxy_pass")
    assert "proxy_pass https://$keycloak_management_upstream/metrics;" in block
    assert "proxy_ssl_verify on;" in block and "proxy_ssl_name keycloak;" in block
    assert "set $keycloak_management_upstream keycloak:9000;" in internal


def test_administration_ports_pass_through_for_the_outside_world_only(conf):
    stream = conf[conf.index("\nstream {"):]
    assert conf.startswith("load_module /usr/lib/nginx/modules/ngx_stream_module.so;") or \
        "\nload_module /usr/lib/nginx/modules/ngx_stream_module.so;" in conf
    for port, upstream in (("5432", "postgres:5432"), ("8443", "keycloak:8443")):
        server = stream[stream.index(f"listen {port};"):]
        server = server[:server.index("proxy_pass")]
        assert f"set $admin_upstream {upstream};" in server
        for subnet in (item.split("=")[1] for item in ZONES.split(",")):
            assert f"deny {subnet};" in server
        assert "allow all;" in server


def test_landing_page_names_the_connection_the_tasks_write(edge, federation):
    html = edge.render_index({**federation, "zone_subnets": ZONES})
    assert f"flwr login {services.CONNECTION_NAME}" in html
    assert f"[superlink.{services.CONNECTION_NAME}]" in html
    assert f'address = "{federation["hostnames"]["control"]}"' in html


def test_landing_page_links_the_federation_overview(edge, federation):
    """The offline dashboard: Prometheus' console page, which services/prometheus ships."""
    html = edge.render_index({**federation, "zone_subnets": ZONES})
    url = f'https://{federation["hostnames"]["prometheus"]}{edge.FEDERATION_CONSOLE}'
    assert f'<a href="{url}">' in html
    from fedops import paths
    assert (paths.SERVICES_DIR / "prometheus" / edge.FEDERATION_CONSOLE.lstrip("/")).is_file()


def test_a_bad_domain_is_refused(edge, federation):
    with pytest.raises(Exception):
        edge.render({**federation, "domain": "evil;include /etc/passwd"})


def test_a_zone_that_does_not_parse_is_refused(edge, federation):
    with pytest.raises(edge.ConfigError, match="FL_ZONES entry"):
        edge.render({**federation, "zone_subnets": "services=172.20.0.0/33"})
    with pytest.raises(edge.ConfigError, match="unknown zone"):
        edge.render({**federation, "zone_subnets": "lobby=10.0.0.0/8"})


def fake_proc(root, processes: dict[int, str]):
    for pid, title in processes.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "cmdline").write_bytes(title.encode().replace(b" ", b"\0") + b"\0")
    (root / "self").mkdir()


def test_reload_waits_for_workers_that_serve_the_new_configuration(edge, tmp_path):
    """`entrypoint.py reload` returns only once new workers took over (a revocation is
    in effect for the very next handshake)."""
    old = tmp_path / "old"
    old.mkdir()
    fake_proc(old, {1: "nginx: master process nginx", 20: "nginx: worker process",
                    21: "nginx: worker process is shutting down"})
    assert edge.serving_workers(old) == {20}
    new = tmp_path / "new"
    new.mkdir()
    fake_proc(new, {1: "nginx: master process nginx", 20: "nginx: worker process is shutting down",
                    30: "nginx: worker process"})
    assert edge.wait_for_new_workers({20}, timeout=1, proc=new)
    assert not edge.wait_for_new_workers({20}, timeout=0.3, proc=old)


def test_building_the_configuration_twice_gives_the_same(edge, federation):
    """write_runtime_files renders nginx.conf and the landing page from one built
    configuration: building it again must not lose the hostnames or zones."""
    once = edge.build_config({**federation, "zone_subnets": ZONES})
    assert edge.build_config(once) == once
    assert edge.render(once) == edge.render({**federation, "zone_subnets": ZONES})


@pytest.mark.parametrize("host", ["prometheus", "alertmanager"])
def test_the_monitoring_uis_are_behind_keycloak_sign_on(conf, federation, host):
    block = server_block(conf, federation["hostnames"][host])
    # every request asks oauth2-proxy first, over TLS verified against the project CA
    root = block[block.index("location / {"):]
    assert "auth_request /oauth2/auth;" in root.split("}")[0]
    assert "error_page 401 = @signin;" in root
    auth = block[block.index("location = /oauth2/auth {"):]
    assert "internal;" in auth.split("}")[0] and "proxy_ssl_verify on;" in auth.split("}")[0]
    assert "proxy_ssl_name oauth2-proxy;" in block
    # no session: to the sign-in, on the published port
    assert f"return 302 https://$host{federation['urls'][host][len('https://' + federation['hostnames'][host]):]}" \
           "/oauth2/start?rd=$request_uri;" in block
    assert re.search(r"location ~ \^/-/\(quit\|reload\)\$ \{\s*return 404;", block)
