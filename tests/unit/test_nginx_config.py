"""services/nginx: the rendered edge configuration (no Docker; the stack tests run it)."""
import re

import pytest

from fedops import paths
from testcerts import load_entrypoint

SERVICE = paths.SERVICES_DIR / "nginx"


@pytest.fixture(scope="module")
def edge():
    return load_entrypoint(SERVICE / "entrypoint.py", "edge_entry")


@pytest.fixture(scope="module")
def conf(edge):
    return edge.render({"domain": "fl.localhost"})


def server_block(conf: str, name: str) -> str:
    """The text of the server block whose server_name is exactly `name`."""
    start = conf.index(f"server_name {name};")
    return conf[start:conf.find("\n    server {", start) if "\n    server {" in conf[start:] else len(conf)]


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
    assert "ssl_verify_client on;" in fleet
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


def test_every_public_hostname_has_a_server(edge, conf):
    for name in edge.hostnames("fl.localhost"):
        assert f"server_name {name};" in conf


def test_a_bad_domain_is_refused(edge):
    with pytest.raises(Exception):
        edge.render({"domain": "evil;include /etc/passwd"})


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
