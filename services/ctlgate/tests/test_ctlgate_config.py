"""ctlgate's configuration from /etc/fl/federation.json (rendered by the tasks)."""
import json

import pytest

from ctlgate.config import Config, ConfigError


def write(tmp_path, **data):
    path = tmp_path / "federation.json"
    path.write_text(json.dumps(data))
    return path


def test_the_issuer_is_keycloaks_public_url_with_the_published_port(tmp_path):
    path = write(tmp_path, domain="fl.example", hostnames={"auth": "auth.fl.example"},
                 urls={"auth": "https://auth.fl.example:8443"})
    config = Config.from_env({}, federation_json=path)
    assert config.issuer == "https://auth.fl.example:8443/realms/flowerfl"
    # back-channel calls: the edge's auth. alias inside the engine, its own port 443
    assert config.keycloak_realm_url == "https://auth.fl.example/realms/flowerfl"


def test_it_serves_https_with_its_own_certificate_by_default(tmp_path):
    config = Config.from_env({}, federation_json=write(tmp_path, domain="fl.example"))
    assert (config.tls_cert, config.tls_key) == ("/etc/fl/tls/tls.crt", "/etc/fl/tls/tls.key")
    plain = Config.from_env({"CTLGATE_TLS_CERT": "", "CTLGATE_TLS_KEY": ""}, federation_json=write(tmp_path, domain="x.y"))
    assert plain.tls_cert is None
    with pytest.raises(ConfigError, match="together"):
        Config.from_env({"CTLGATE_TLS_KEY": ""}, federation_json=write(tmp_path, domain="x.y"))


def test_the_superlink_is_probed_through_the_edge(tmp_path):
    config = Config.from_env({}, federation_json=write(tmp_path, domain="fl.example"))
    assert config.probes["superlink"] == ["http://nginx:8080/superlink/health"]
