"""The NGINX edge (task list 3.3): a TLS scan of every virtual host, routing, refusals."""
import ssl
import subprocess

import httpx
import pytest

from edge import client, handshake

WEAK_TLS12 = ["AES128-SHA", "AES256-GCM-SHA384", "DES-CBC3-SHA", "ECDHE-RSA-AES128-SHA",
              "ECDHE-ECDSA-AES256-SHA", "DHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256"]
MOZILLA_INTERMEDIATE_12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"}


@pytest.fixture(scope="module")
def hosts(stack):
    return list(stack.rendered()["hostnames"].values())


@pytest.fixture(autouse=True)
def _old_protocols_on_purpose(recwarn):
    """The scan offers deprecated protocol versions on purpose."""


def legacy_context(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def test_edge_is_healthy(stack):
    from fedops import stack as stack_ops
    stack_ops.wait_healthy(["nginx"], timeout=60)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_protocols_below_tls12_are_refused_on_every_host(hosts, version):
    for host in hosts:
        # the server's alert, not a client-side refusal: the client offers the old version
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            handshake(host, legacy_context(version)).close()


def test_only_mozilla_intermediate_ciphers_are_accepted(hosts):
    """Enumerate: try every TLS 1.2 cipher suite OpenSSL knows against every host."""
    all_ciphers = subprocess.run(["openssl", "ciphers", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                                 capture_output=True, text=True, check=True).stdout.strip().split(":")
    for host in hosts:
        accepted = set()
        for cipher in all_ciphers:
            ctx = legacy_context(ssl.TLSVersion.TLSv1_2)
            try:
                ctx.set_ciphers(f"{cipher}:@SECLEVEL=0")
            except ssl.SSLError:
                continue
            try:
                handshake(host, ctx).close()
                accepted.add(cipher)
            except (ssl.SSLError, ConnectionResetError):
                pass
        assert accepted, f"{host}: no TLS 1.2 cipher accepted"
        assert accepted <= MOZILLA_INTERMEDIATE_12, f"{host}: weak ciphers {accepted - MOZILLA_INTERMEDIATE_12}"
        assert not accepted & set(WEAK_TLS12)


def test_tls13_works_and_the_chain_verifies_against_the_project_ca(stack, hosts):
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    for host in hosts:
        with handshake(host, ctx) as tls:
            assert tls.version() == "TLSv1.3"


def test_the_edge_certificate_does_not_verify_against_public_roots(hosts):
    ctx = ssl.create_default_context()   # system bundle only
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(hosts[0], ctx).close()


def test_hsts_on_every_host(stack, hosts):
    https = stack.rendered()["public_https_port"]
    port = "" if https == 443 else f":{https}"
    with client(stack) as http:
        for host in hosts:
            if host.startswith("fleet."):
                continue   # needs a client certificate: see test_fleet
            r = http.get(f"https://{host}{port}/")
            assert "max-age=63072000" in r.headers.get("strict-transport-security", ""), host


def test_unknown_hostname_gets_no_service(stack):
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    ctx.check_hostname = False
    with pytest.raises(ssl.SSLError):
        handshake("unknown.example.org", ctx).close()


def test_plain_http_redirects_to_https(stack):
    port = int(stack.setting("FL_HTTP_PORT"))
    host = stack.hostname("auth")
    r = httpx.get(f"http://127.0.0.1:{port}/realms/flowerfl", headers={"Host": host}, follow_redirects=False)
    assert r.status_code in (301, 308)
    assert r.headers["location"] == f"{stack.url('auth')}/realms/flowerfl"
    with pytest.raises(httpx.HTTPError):   # an unknown Host is closed without an answer
        httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "evil.example.org"}, timeout=5)


def test_landing_page_lists_the_services(stack):
    with client(stack) as http:
        r = http.get(f"{stack.url('landing')}/")
    assert r.status_code == 200
    for name in ("auth", "control", "fleet"):
        assert stack.hostname(name) in r.text
