"""The stack tests' browser (tests/stack/chromium.py) trusts exactly the CA it is given:
a page served on loopback with a certificate from that CA loads; the same page in a
browser without the CA, or with another CA, does not (Chromium shows its interstitial).
Real Chromium, real TLS, no network beyond 127.0.0.1."""
from __future__ import annotations

import http.server
import ssl
import threading

import pytest

import testcerts
from fedops import paths

chromium = testcerts.load_entrypoint(paths.ROOT / "tests" / "stack" / "chromium.py", "fl_chromium")
pytestmark = pytest.mark.skipif(bool(chromium.missing()), reason=chromium.missing() or "ready")

DOMAIN = "trust.fltest.localhost"
PAGE = b"<!doctype html><title>served</title><h1 id='ok'>the project CA is trusted</h1>"


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a leaf for host.DOMAIN from a fresh CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca = testcerts.make_ca("Browser Test CA")
    testcerts.write_tls(folder, ca, testcerts.make_leaf(ca, "host", dns=[f"host.{DOMAIN}"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = tmp_path_factory.mktemp("other")
    testcerts.write_tls(other, testcerts.make_ca("Another CA"), testcerts.make_leaf(ca, "x"))
    yield f"https://host.{DOMAIN}:{server.server_address[1]}/", folder / "ca.crt", other / "ca.crt"
    server.shutdown()


def test_a_page_under_the_given_ca_loads(served):
    url, ca, _ = served
    with chromium.browser(ca, DOMAIN) as driver:
        driver.get(url)
        assert driver.title == "served"
        assert "the project CA is trusted" in driver.page_source


@pytest.mark.parametrize("which", ["no CA", "another CA"])
def test_without_the_ca_the_page_does_not_load(served, which):
    url, _, other = served
    with chromium.browser(None if which == "no CA" else other, DOMAIN) as driver:
        try:
            driver.get(url)
        except Exception as exc:  # noqa: BLE001 - selenium reports the interstitial as an error on some versions
            assert "ERR_CERT" in str(exc), exc
            return
        assert "the project CA is trusted" not in driver.page_source
        assert "ERR_CERT_AUTHORITY_INVALID" in driver.page_source or "Your connection is not private" in driver.page_source
