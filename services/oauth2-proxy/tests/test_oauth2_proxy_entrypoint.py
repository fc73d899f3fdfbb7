"""services/oauth2-proxy: the command line follows the federation (issuer with the public
port, back channel through the edge), secrets are checked and never on the command line."""
from pathlib import Path

import pytest

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]
FED = {"hostnames": {"auth": "auth.fl.test"}, "urls": {"auth": "https://auth.fl.test:8443"}}


@pytest.fixture
def entry():
    return load_entrypoint(SERVICE / "entrypoint.py", "oauth2_proxy_entry")


def flags(argv):
    out = {}
    for a in argv[1:]:
        key, eq, value = a[2:].partition("=")
        out[key] = value if eq else "true"
    return out


def test_issuer_is_public_and_the_back_channel_goes_through_the_edge(entry):
    f = flags(entry.command(FED, tls=Path("/etc/fl/tls")))
    assert f["oidc-issuer-url"] == "https://auth.fl.test:8443/realms/flowerfl"
    assert f["login-url"] == "https://auth.fl.test:8443/realms/flowerfl/protocol/openid-connect/auth"
    assert f["redeem-url"] == "https://auth.fl.test/realms/flowerfl/protocol/openid-connect/token"
    assert f["oidc-jwks-url"] == "https://auth.fl.test/realms/flowerfl/protocol/openid-connect/certs"
    assert f["provider-ca-file"] == "/etc/fl/tls/ca.crt"


def test_only_the_role_gets_in_over_tls_with_secure_cookies(entry):
    argv = entry.command(FED)
    f = flags(argv)
    assert f["allowed-role"] == "monitoring_viewer" and f["client-id"] == "monitoring"
    assert f["http-address"] == "" and f["https-address"].endswith(":4180")
    assert f["cookie-secure"] == "true" and f["cookie-httponly"] == "true"
    assert not any("secret" in a for a in argv), "secrets go in the environment, never argv"


def test_a_cookie_secret_of_the_wrong_size_is_refused(entry, tmp_path, capsys):
    (tmp_path / "oauth2_proxy_cookie_secret").write_text("short\n")
    with pytest.raises(SystemExit):
        entry.secret("oauth2_proxy_cookie_secret", tmp_path, sizes=(16, 24, 32))
    assert "--rotate oauth2_proxy_cookie_secret" in capsys.readouterr().err
    (tmp_path / "oauth2_proxy_cookie_secret").write_text("x" * 32 + "\n")
    assert entry.secret("oauth2_proxy_cookie_secret", tmp_path, sizes=(16, 24, 32)) == "x" * 32


def test_a_missing_secret_says_how_to_make_it(entry, tmp_path, capsys):
    with pytest.raises(SystemExit):
        entry.secret("oidc_monitoring_secret", tmp_path)
    assert "invoke secrets.generate" in capsys.readouterr().err
